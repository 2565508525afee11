// Elementwise ops and their gradients. Binary ops broadcast; each input's gradient is summed back to its
// own shape (sum_to_shape, the adjoint of broadcasting).
#include "ops/op_util.h"

namespace dtrn {
namespace {

Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  check_same_kind(a, b, name);
  check_floating(a, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  if (out.numel() > 0) backend_of(a).binary(op, broadcast_view(a, shape), broadcast_view(b, shape), out);
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::kAdd, a, b, "add");
  Shape sa = a.shape(), sb = b.shape();
  return record("add", out, {a, b}, [sa, sb](const Tensor& g) -> std::vector<Tensor> {
    return {sum_to_shape(g, sa), sum_to_shape(g, sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::kSub, a, b, "sub");
  Shape sa = a.shape(), sb = b.shape();
  return record("sub", out, {a, b}, [sa, sb](const Tensor& g) -> std::vector<Tensor> {
    return {sum_to_shape(g, sa), scale(sum_to_shape(g, sb), -1.0)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::kMul, a, b, "mul");
  Tensor sa = a.detach(), sb = b.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  return record("mul", out, {a, b}, [sa, sb, need_a, need_b](const Tensor& g) -> std::vector<Tensor> {
    return {need_a ? sum_to_shape(mul(g, sb), sa.shape()) : Tensor(),
            need_b ? sum_to_shape(mul(g, sa), sb.shape()) : Tensor()};
  });
}

Tensor scale(const Tensor& x, double alpha) {
  check_floating(x, "scale");
  Tensor in = x.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() > 0) backend_of(x).affine(in, alpha, 0.0, out);
  // A gradient the host knows stays known: the value the kernels compute (alpha and x in the dtype).
  if (const std::optional<double> v = x.known_value()) {
    if (x.dtype() == DType::kF64) out.impl().known_value = alpha * *v;
    if (x.dtype() == DType::kF32) out.impl().known_value = static_cast<float>(alpha) * static_cast<float>(*v);
  }
  return record("scale", out, {x}, [alpha](const Tensor& g) -> std::vector<Tensor> {
    return {scale(g, alpha)};
  });
}

Tensor add_scalar(const Tensor& x, double beta) {
  check_floating(x, "add_scalar");
  Tensor in = x.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() > 0) backend_of(x).affine(in, 1.0, beta, out);
  return record("add_scalar", out, {x}, [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

Tensor silu(const Tensor& x) {
  check_floating(x, "silu");
  Tensor in = x.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() > 0) backend_of(x).silu(in, out);
  Tensor saved = in.detach();
  return record("silu", out, {x}, [saved](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty(saved.shape(), saved.dtype(), saved.device());
    if (dx.numel() > 0) backend_of(saved).silu_backward(saved, gc, dx, Tensor());
    return {dx};
  });
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_same_kind(gate, up, "swiglu");
  check_floating(gate, "swiglu");
  DTRN_CHECK(gate.shape() == up.shape(), "swiglu: gate ", shape_str(gate.shape()), " vs up ",
             shape_str(up.shape()));
  Tensor g_in = gate.contiguous().detach(), u_in = up.contiguous().detach();
  Tensor out = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
  if (out.numel() > 0) backend_of(gate).swiglu(g_in, u_in, out);
  return record("swiglu", out, {gate, up}, [g_in, u_in](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = g.contiguous();
    Tensor dg = Tensor::empty(g_in.shape(), g_in.dtype(), g_in.device());
    Tensor du = Tensor::empty(g_in.shape(), g_in.dtype(), g_in.device());
    if (dg.numel() > 0) backend_of(g_in).swiglu_backward(g_in, u_in, gc, dg, du, Tensor());
    return {dg, du};
  });
}

}  // namespace dtrn
