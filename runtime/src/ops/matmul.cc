// Matrix products with transposed operands, batched or with one shared right-hand matrix, and linear.
//
// Gradients of C = op(A) op(B) (op = identity or transpose), written with the same op:
//   dA = dC op(B)^T          (or, when A is transposed, dA = op(B) dC^T)
//   dB = op(A)^T dC          (or, when B is transposed, dB = dC^T op(A))
// A shared 2-D B receives the sum over the batch, computed as one product over the flattened batch.
//
// linears() reads one input x through several weights; its backward sums x's gradient inside the
// products (dx = g_0 W_0, then dx += g_i W_i with beta = 1): on a GPU the product reads the running
// sum in the output's dtype, adds in f32 and rounds once, where separate products and an add would
// round each term and the sum and move [N, C] through memory three more times.
#include "ops/matmul_backward.h"
#include "ops/op_util.h"

namespace dtrn {
namespace {

struct MatmulGeometry {
  Shape batch;  // leading dims of a
  int64_t m, n, k;
  bool shared_b;  // b is 2-D and used by every batch entry
};

MatmulGeometry geometry(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  DTRN_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands need 2+ dims, got ", a.describe(),
             " and ", b.describe());
  MatmulGeometry g;
  g.batch = Shape(a.shape().begin(), a.shape().end() - 2);
  g.m = ta ? a.size(-1) : a.size(-2);
  const int64_t ka = ta ? a.size(-2) : a.size(-1);
  const int64_t kb = tb ? b.size(-1) : b.size(-2);
  g.n = tb ? b.size(-2) : b.size(-1);
  g.k = ka;
  DTRN_CHECK(ka == kb, "matmul: inner dimensions differ: ", shape_str(a.shape()),
             ta ? "^T" : "", " x ", shape_str(b.shape()), tb ? "^T" : "");
  g.shared_b = b.dim() == 2 && a.dim() > 2;
  if (!g.shared_b) {
    DTRN_CHECK(Shape(b.shape().begin(), b.shape().end() - 2) == g.batch,
               "matmul: batch dimensions differ: ", shape_str(a.shape()), " x ", shape_str(b.shape()));
  }
  return g;
}

// op(a) op(b), plus `residual` (the result's shape and dtype) when it is defined, added inside the
// product (Backend::gemm_add).
Tensor matmul_forward(const Tensor& a_in, const Tensor& b_in, bool ta, bool tb, const Tensor& residual = Tensor()) {
  check_same_kind(a_in, b_in, "matmul");
  check_floating(a_in, "matmul");
  const MatmulGeometry geo = geometry(a_in, b_in, ta, tb);
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  Shape out_shape = geo.batch;
  out_shape.push_back(geo.m);
  out_shape.push_back(geo.n);
  Tensor c = Tensor::empty(out_shape, a.dtype(), a.device());
  if (residual.defined()) {
    DTRN_CHECK(residual.shape() == out_shape && residual.dtype() == c.dtype() && residual.device() == c.device(),
               "matmul: residual ", residual.describe(), " for a product of ", shape_str(out_shape));
  }
  if (c.numel() == 0) return c;
  if (geo.k == 0) {
    if (residual.defined()) return residual.contiguous().clone();
    backend_of(a).fill(c, 0.0);
    return c;
  }
  GemmArgs args;
  args.batch = shape_numel(geo.batch);
  args.m = geo.m;
  args.n = geo.n;
  args.k = geo.k;
  args.trans_a = ta;
  args.trans_b = tb;
  args.stride_a = geo.m * geo.k;
  args.stride_b = geo.shared_b ? 0 : geo.k * geo.n;
  args.stride_c = geo.m * geo.n;
  if (geo.shared_b && !ta) {  // one tall product instead of a batch of small ones
    args.m *= args.batch;
    args.batch = 1;
  }
  if (residual.defined()) {
    DTRN_CHECK(args.batch == 1, "matmul: a residual needs one product, got a batch of ", args.batch);
    backend_of(a).gemm_add(args, a, b, residual.contiguous(), c);
  } else {
    backend_of(a).gemm(args, a, b, c);
  }
  return c;
}

// c = op(x) op(y) + beta c for 2-D x and y and contiguous 2-D c (c may be f32 for bf16 x and y). Does
// nothing when a dimension is 0: callers that pass beta = 0 fill c themselves then.
void gemm_into(const Tensor& x_in, const Tensor& y_in, bool tx, bool ty, const Tensor& c, double beta) {
  Tensor x = x_in.contiguous(), y = y_in.contiguous();
  GemmArgs args;
  args.m = tx ? x.size(1) : x.size(0);
  args.k = tx ? x.size(0) : x.size(1);
  args.n = ty ? y.size(0) : y.size(1);
  args.trans_a = tx;
  args.trans_b = ty;
  args.beta = beta;
  if (args.m == 0 || args.n == 0 || args.k == 0) return;
  backend_of(c).gemm(args, x, y, c);
}

// Note [Weight gradients straight into their f32 buffers]
// In bf16 training a weight's gradient accumulates in f32 (autograd.cc). Computing it as a bf16 product
// and adding that to the buffer rounds every micro-batch's gradient to bf16 and moves it through memory
// twice; cuBLASLt can instead accumulate the bf16 product directly into the f32 buffer (beta = 1). The
// matmul backward does so for a 2-D bf16 leaf on a GPU, creating the buffer when it does not exist yet,
// and returns no gradient for that input (it is already accumulated).
std::shared_ptr<TensorImpl> f32_gradient_buffer(const Tensor& b) {
  if (!(b.is_leaf() && b.requires_grad() && b.dim() == 2 && b.dtype() == DType::kBF16 &&
        b.device().is_cuda())) {
    return nullptr;
  }
  return b.impl_ptr();
}

void check_linear_weight(const Tensor& x, const Tensor& weight, const char* op) {
  DTRN_CHECK(weight.dim() == 2, op, ": weight must be [out, in], got ", weight.describe());
  DTRN_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), op, ": input ", shape_str(x.shape()), " vs weight ",
             shape_str(weight.shape()));
}

// x's gradient from the gradients of linears' outputs, in one buffer that the first product writes and
// the others accumulate into (outputs without a gradient skipped).
Tensor linears_input_gradient(const std::vector<MatmulSaved>& saved, const std::vector<Tensor>& grads) {
  const Tensor& x = saved.front().a;
  const int64_t k = x.size(-1);
  Tensor dx = Tensor::empty({k == 0 ? 0 : x.numel() / k, k}, x.dtype(), x.device());
  bool written = false;
  for (size_t i = 0; i < saved.size(); ++i) {
    if (!grads[i].defined() || saved[i].b.size(0) == 0) continue;  // an empty weight adds nothing
    const Tensor g = grads[i].contiguous();
    gemm_into(g.reshape({-1, g.size(-1)}), saved[i].b, false, false, dx, written ? 1.0 : 0.0);
    written = true;
  }
  if (!written && dx.numel() > 0) backend_of(dx).fill(dx, 0.0);
  return dx.reshape(x.shape());
}

}  // namespace

Tensor linear_add_forward(const Tensor& x, const Tensor& weight, const Tensor& residual) {
  check_linear_weight(x, weight, "linear");
  return matmul_forward(x.detach(), weight.detach(), false, true, residual.detach());
}

MatmulSaved save_for_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  MatmulSaved s;
  s.a = a.detach();
  s.b = b.detach();
  s.ta = ta;
  s.tb = tb;
  s.shared_b = b.dim() == 2 && a.dim() > 2;
  s.need_a = a.requires_grad();
  s.need_b = b.requires_grad();
  s.b_buffer = needs_grad({a, b}) ? f32_gradient_buffer(b) : nullptr;
  return s;
}

Tensor matmul_grad_a(const MatmulSaved& s, const Tensor& g) {
  if (!s.need_a) return Tensor();
  return s.ta ? matmul(s.b, g, s.tb, true) : matmul(g, s.b, false, !s.tb);
}

Tensor matmul_grad_b(const MatmulSaved& s, const Tensor& g) {
  if (s.b_buffer != nullptr && (!s.b_buffer->grad || s.b_buffer->grad->dtype == DType::kF32)) {
    // Note [Weight gradients straight into their f32 buffers]
    if (!s.b_buffer->grad) s.b_buffer->grad = Tensor::zeros(s.b.shape(), DType::kF32, s.b.device()).impl_ptr();
    const Tensor a2 = s.a.reshape({-1, s.a.size(-1)}), g2 = g.reshape({-1, g.size(-1)});
    if (s.tb) {
      gemm_into(g2, a2, true, s.ta, Tensor(s.b_buffer->grad), 1.0);
    } else {
      gemm_into(a2, g2, !s.ta, false, Tensor(s.b_buffer->grad), 1.0);
    }
    return Tensor();
  }
  if (!s.need_b) return Tensor();
  if (s.shared_b) {
    Tensor a2 = s.a.reshape({-1, s.a.size(-1)});
    Tensor g2 = g.reshape({-1, g.size(-1)});
    return s.tb ? matmul(g2, a2, true, false) : matmul(a2, g2, true, false);
  }
  return s.tb ? matmul(g, s.a, true, s.ta) : matmul(s.a, g, !s.ta, false);
}

std::vector<Tensor> matmul_backward(const MatmulSaved& s, const Tensor& g) {
  return {matmul_grad_a(s, g), matmul_grad_b(s, g)};
}

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  Tensor c = matmul_forward(a, b, ta, tb);
  const bool shared_b = b.dim() == 2 && a.dim() > 2;
  DTRN_CHECK(!(shared_b && ta && needs_grad({a, b})),
             "matmul: a transposed batched operand with a shared 2-D right-hand side has no backward");
  MatmulSaved saved = save_for_matmul(a, b, ta, tb);
  return record("matmul", c, {a, b},
                [saved](const Tensor& g) -> std::vector<Tensor> { return matmul_backward(saved, g); });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_linear_weight(x, weight, "linear");
  Tensor y = matmul(x, weight, false, true);
  if (!bias.defined()) return y;
  DTRN_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias ",
             shape_str(bias.shape()), " vs weight ", shape_str(weight.shape()));
  return add(y, bias);
}

std::vector<Tensor> linears(const Tensor& x, const std::vector<Tensor>& weights) {
  DTRN_CHECK(!weights.empty(), "linears: no weights for input ", x.describe());
  const Tensor xk = x.detach().contiguous();  // made contiguous once for every product
  std::vector<Tensor> outputs, inputs = {x};
  std::vector<MatmulSaved> saved;
  for (const Tensor& w : weights) {
    check_linear_weight(x, w, "linears");
    check_same_kind(x, w, "linears");
    outputs.push_back(matmul_forward(xk, w, false, true));
    inputs.push_back(w);
    saved.push_back(save_for_matmul(xk, w, false, true));
    saved.back().need_a = false;  // x's gradient is summed over the outputs below
  }
  const bool need_x = x.requires_grad();
  return record_outputs("linears", std::move(outputs), inputs,
                        [saved, need_x](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
                          std::vector<Tensor> out(1 + saved.size());
                          if (need_x) out[0] = linears_input_gradient(saved, grads);
                          for (size_t i = 0; i < saved.size(); ++i) {
                            if (grads[i].defined()) out[1 + i] = matmul_backward(saved[i], grads[i])[1];
                          }
                          return out;
                        });
}


}  // namespace dtrn
