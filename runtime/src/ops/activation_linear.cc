// A linear layer over an activation, holding only the activation's inputs for the backward: the
// activation is recomputed there (llm.c recomputes its GeLU the same way). SwiGLU's output is the
// widest activation of a Llama block ([N, F], F ~ 2.7 C); the router's hidden SiLU is [N, C/2].
//
// The backward takes the product's input gradient da = g W first, then one element-wise pass reads the
// activation's inputs and da and writes both their gradients and the recomputed activation, which the
// weight gradient g^T a reads last: one pass over the [N, F] tensors instead of a recompute pass and a
// gradient pass reading the same inputs twice. swiglu_linear may also add a residual inside its product
// (the MLP's residual add; its gradient is the output's, passed on without a kernel).
#include "ops/matmul_backward.h"
#include "ops/op_util.h"

namespace dtrn {
namespace {

enum class Activation { kSilu, kSwiglu };

Tensor activate(Activation act, const std::vector<Tensor>& in) {
  return act == Activation::kSilu ? silu(in[0]) : swiglu(in[0], in[1]);
}

// The gradients of the activation's inputs `in` (contiguous) for the gradient `g` of its output; the
// same pass writes the activation into `out` where out is defined.
std::vector<Tensor> activation_backward(Activation act, const std::vector<Tensor>& in, const Tensor& g,
                                        const Tensor& out) {
  const Tensor gc = g.contiguous();
  std::vector<Tensor> grads;
  for (const Tensor& t : in) grads.push_back(Tensor::empty(t.shape(), t.dtype(), t.device()));
  if (in[0].numel() == 0) return grads;
  if (act == Activation::kSilu) {
    backend_of(in[0]).silu_backward(in[0], gc, grads[0], out);
  } else {
    backend_of(in[0]).swiglu_backward(in[0], in[1], gc, grads[0], grads[1], out);
  }
  return grads;
}

// linear(activation, weight, bias), plus `residual` added inside the product when it is defined (no
// bias then): the block's residual add without a pass of its own.
Tensor activation_linear(const char* name, Activation act, const std::vector<Tensor>& act_in,
                         const Tensor& weight, const Tensor& bias, const Tensor& residual = Tensor()) {
  Tensor y;
  {
    NoGradGuard no_grad;
    y = residual.defined() ? linear_add_forward(activate(act, act_in), weight, residual)
                           : linear(activate(act, act_in), weight, bias);
  }
  std::vector<Tensor> inputs = act_in;
  inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  if (residual.defined()) inputs.push_back(residual);
  if (!needs_grad(inputs)) return y;

  std::vector<Tensor> saved_in;
  for (const Tensor& t : act_in) saved_in.push_back(t.contiguous().detach());
  // The product's input is the activation, recomputed in backward; until then only its inputs are held.
  MatmulSaved product = save_for_matmul(saved_in[0], weight, false, true);
  product.a = Tensor();
  product.need_a = needs_grad(act_in);
  const bool need_bias = bias.defined() && bias.requires_grad();
  const Shape bias_shape = bias.defined() ? bias.shape() : Shape{};
  const bool has_bias = bias.defined(), has_residual = residual.defined();
  return record(name, y, inputs,
                [act, saved_in, product, need_bias, bias_shape, has_bias,
                 has_residual](const Tensor& g) -> std::vector<Tensor> {
                  MatmulSaved p = product;  // p.a: recomputed only where the weight's gradient reads it
                  std::vector<Tensor> grads(saved_in.size());
                  if (p.need_a) {
                    const Tensor& in0 = saved_in[0];
                    if (p.need_b) p.a = Tensor::empty(in0.shape(), in0.dtype(), in0.device());
                    grads = activation_backward(act, saved_in, matmul_grad_a(p, g), p.a);
                  } else if (p.need_b) {
                    p.a = activate(act, saved_in);
                  }
                  grads.push_back(matmul_grad_b(p, g));
                  if (has_bias) grads.push_back(need_bias ? sum_to_shape(g, bias_shape) : Tensor());
                  if (has_residual) grads.push_back(g);  // the sum passes its gradient on unchanged
                  return grads;
                });
}

}  // namespace

Tensor silu_linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return activation_linear("silu_linear", Activation::kSilu, {x}, weight, bias);
}

Tensor swiglu_linear(const Tensor& gate, const Tensor& up, const Tensor& weight, const Tensor& residual) {
  DTRN_CHECK(gate.shape() == up.shape(), "swiglu_linear: gate ", shape_str(gate.shape()), " vs up ",
             shape_str(up.shape()));
  return activation_linear("swiglu_linear", Activation::kSwiglu, {gate, up}, weight, Tensor(), residual);
}

}  // namespace dtrn
