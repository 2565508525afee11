// The neural-network ops of ops.h (rmsnorm, rmsnorm_keep, add_rmsnorm, rope, softmax, cross_entropy)
// with their backwards.
// Each validates its arguments (naming the op and the shapes involved), hands contiguous,
// history-free views of its inputs to the device's kernel, and records one node whose backward
// calls the matching backward kernel. Kernels never see empty tensors (a GPU launch with zero
// blocks is an error), so the op layer skips them and produces the empty or zero result itself.
// Per-row statistics (rstd, lse, losses) are f64 for f64 data and f32 otherwise, as backend.h
// specifies.
#include <cmath>
#include <utility>
#include <vector>

#include "ops/op_util.h"

namespace dtrn {
namespace {

DType stats_dtype(DType data) { return data == DType::kF64 ? DType::kF64 : DType::kF32; }

void check_index(const Tensor& t, const char* op, const char* what) {
  DTRN_CHECK(t.dtype() == DType::kI32 || t.dtype() == DType::kI64, op, ": ", what,
             " must be i32 or i64, got ", t.describe());
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  DTRN_CHECK(a.device() == b.device(), op, ": devices differ: ", a.describe(), " vs ",
             b.describe());
}

// What a kernel reads: the tensor's values, contiguous, without autograd history (the op records
// its own node over the original inputs).
Tensor kernel_input(const Tensor& t) { return t.detach().contiguous(); }

// The number of rows of x viewed as [N, x.size(-1)].
int64_t rows_of(const Shape& shape) { return shape_numel(Shape(shape.begin(), shape.end() - 1)); }

// The backward of a norm whose input h [N, C] also passes on, unchanged, to other consumers (add_rmsnorm's
// sum, rmsnorm_keep's x): {dh, dweight} with dh = dpass + the norm's dx in one kernel. When only the
// passthrough has a gradient, the norm contributes nothing and dpass is dh. `shape` is h's outer shape.
std::pair<Tensor, Tensor> passthrough_norm_backward(const Tensor& h, const Tensor& w, const Tensor& rstd,
                                                    const Shape& shape, const Tensor& dpass,
                                                    const Tensor& dnormed, const char* op) {
  if (!dnormed.defined()) return {dpass, Tensor()};
  if (h.numel() == 0) {
    return {Tensor::empty(shape, h.dtype(), h.device()), Tensor::zeros(w.shape(), w.dtype(), w.device())};
  }
  Tensor dx = Tensor::empty(h.shape(), h.dtype(), h.device());
  Tensor dw = Tensor::empty(w.shape(), w.dtype(), w.device());
  Tensor dy = dnormed.contiguous().reshape(h.shape());
  if (dpass.defined()) {
    DTRN_CHECK(dpass.dtype() == h.dtype(), op, ": the passthrough's gradient ", dpass.describe(),
               " is not of its dtype ", dtype_name(h.dtype()));
    backend_of(h).add_rmsnorm_backward(h, w, rstd, dy, dpass.contiguous().reshape(h.shape()), dx, dw);
  } else {
    backend_of(h).rmsnorm_backward(h, w, rstd, dy, dx, dw);
  }
  return {dx.reshape(shape), dw};
}

// The arguments every RMSNorm op checks, under the name `op`.
void check_norm_args(const Tensor& x, const Tensor& weight, double eps, const char* op) {
  DTRN_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1), op, ": weight ",
             shape_str(weight.shape()), " does not match the last dimension of x ", shape_str(x.shape()));
  check_floating(x, op);
  check_same_kind(x, weight, op);
  DTRN_CHECK(eps >= 0, op, ": eps must be non-negative, got ", eps);
}

// rmsnorm's forward, validated under the name `op`: x as the kernel read it [N, C], the weight, y [N, C]
// and rstd [N].
struct NormForward {
  Tensor x2, w, y, rstd;
};
NormForward rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const char* op) {
  check_norm_args(x, weight, eps, op);
  const int64_t c = x.size(-1), n = rows_of(x.shape());
  NormForward f{kernel_input(x).reshape({n, c}), kernel_input(weight), Tensor::empty({n, c}, x.dtype(), x.device()),
                Tensor::empty({n}, stats_dtype(x.dtype()), x.device())};
  if (f.y.numel() > 0) backend_of(x).rmsnorm(f.x2, f.w, eps, f.y, f.rstd);
  return f;
}

}  // namespace

Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  const NormForward f = rmsnorm_forward(x, weight, eps, "rmsnorm");
  const Shape shape = x.shape();
  return record("rmsnorm", f.y.reshape(shape), {x, weight},
                [x2 = f.x2, w = f.w, rstd = f.rstd, shape](const Tensor& grad) -> std::vector<Tensor> {
                  auto [dx, dw] = passthrough_norm_backward(x2, w, rstd, shape, Tensor(), grad, "rmsnorm");
                  return {dx, dw};
                });
}

ResidualNorm rmsnorm_keep(const Tensor& x, const Tensor& weight, double eps) {
  const NormForward f = rmsnorm_forward(x, weight, eps, "rmsnorm_keep");
  const Shape shape = x.shape();
  // The passthrough is a second handle on x's storage whose producer is this node, so that the gradients
  // of x's other consumers meet the norm's dx in its backward kernel.
  std::vector<Tensor> out = record_outputs(
      "rmsnorm_keep", {x.detach(), f.y.reshape(shape)}, {x, weight},
      [x2 = f.x2, w = f.w, rstd = f.rstd, shape](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
        auto [dx, dw] = passthrough_norm_backward(x2, w, rstd, shape, grads[0], grads[1], "rmsnorm_keep");
        return {dx, dw};
      });
  return {out[0], out[1]};
}

ResidualNorm add_rmsnorm(const Tensor& x, const Tensor& delta, const Tensor& weight, double eps) {
  DTRN_CHECK(x.shape() == delta.shape(), "add_rmsnorm: x ", shape_str(x.shape()), " and delta ",
             shape_str(delta.shape()), " differ in shape");
  check_norm_args(x, weight, eps, "add_rmsnorm");
  check_same_kind(x, delta, "add_rmsnorm");
  const Shape shape = x.shape();
  const int64_t c = x.size(-1), n = rows_of(shape);
  Tensor w = kernel_input(weight);
  Tensor h = Tensor::empty({n, c}, x.dtype(), x.device());
  Tensor y = Tensor::empty({n, c}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({n}, stats_dtype(x.dtype()), x.device());
  if (y.numel() > 0) {
    backend_of(x).add_rmsnorm(kernel_input(x).reshape({n, c}), kernel_input(delta).reshape({n, c}), w,
                              eps, h, y, rstd);
  }
  // h is saved as the kernel's plain tensor, not the recorded output (Note [Saving outputs]).
  std::vector<Tensor> out = record_outputs(
      "add_rmsnorm", {h.reshape(shape), y.reshape(shape)}, {x, delta, weight},
      [h, w, rstd, shape](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
        auto [dx, dw] = passthrough_norm_backward(h, w, rstd, shape, grads[0], grads[1], "add_rmsnorm");
        return {dx, dx, dw};
      });
  return {out[0], out[1]};
}

Tensor rope(const Tensor& x, const Tensor& positions, double theta) {
  DTRN_CHECK(x.dim() == 3 && x.size(2) % 2 == 0, "rope: x must be [N, H, D] with D even, got ",
             shape_str(x.shape()));
  DTRN_CHECK(positions.dim() == 1 && positions.size(0) == x.size(0), "rope: positions ",
             shape_str(positions.shape()), " must be [N] for x ", shape_str(x.shape()));
  check_floating(x, "rope");
  check_index(positions, "rope", "positions");
  check_same_device(x, positions, "rope");
  DTRN_CHECK(theta > 0, "rope: theta must be positive, got ", theta);
  Tensor pos = positions.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() > 0) backend_of(x).rope(kernel_input(x), pos, theta, /*inverse=*/false, out);
  return record("rope", out, {x, positions},
                [pos, theta](const Tensor& grad) -> std::vector<Tensor> {
                  Tensor dx = Tensor::empty(grad.shape(), grad.dtype(), grad.device());
                  if (dx.numel() > 0)
                    backend_of(dx).rope(grad.contiguous(), pos, theta, /*inverse=*/true, dx);
                  return {dx, Tensor()};
                });
}

Tensor softmax(const Tensor& x) {
  DTRN_CHECK(x.dim() >= 1, "softmax: x must have at least one dimension, got ",
             shape_str(x.shape()));
  check_floating(x, "softmax");
  const Shape shape = x.shape();
  const int64_t c = x.size(-1), n = rows_of(shape);
  Tensor y = Tensor::empty({n, c}, x.dtype(), x.device());
  if (y.numel() > 0) backend_of(x).softmax(kernel_input(x).reshape({n, c}), y);
  return record("softmax", y.reshape(shape), {x},
                [y = y.detach(), shape](const Tensor& grad) -> std::vector<Tensor> {
                  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
                  if (dx.numel() > 0) {
                    backend_of(y).softmax_backward(y, grad.contiguous().reshape(y.shape()), dx);
                  }
                  return {dx.reshape(shape)};
                });
}

// The cross-entropy kernel's per-row lse (targets 0: every row kept) serves as the forward.
Tensor logsumexp(const Tensor& x) {
  DTRN_CHECK(x.dim() == 2 && x.size(1) >= 1, "logsumexp: x must be [N, C >= 1], got ", shape_str(x.shape()));
  check_floating(x, "logsumexp");
  const int64_t n = x.size(0);
  const DType stats = stats_dtype(x.dtype());
  Tensor lse = Tensor::empty({n}, stats, x.device());
  if (n > 0) {
    Tensor losses = Tensor::empty({n}, stats, x.device());
    Tensor targets = Tensor::zeros({n}, DType::kI32, x.device());
    backend_of(x).cross_entropy(kernel_input(x), targets, -1, x.size(1), losses, lse);
  }
  return record("logsumexp", lse, {x}, [x = x.detach()](const Tensor& grad) -> std::vector<Tensor> {
    NoGradGuard no_grad;
    return {mul(softmax(x), grad.reshape({x.size(0), 1}).to(x.dtype()))};
  });
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     int64_t num_classes, double expected_grad) {
  DTRN_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, V], got ",
             shape_str(logits.shape()));
  DTRN_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), "cross_entropy: targets ",
             shape_str(targets.shape()), " must be [N] for logits ", shape_str(logits.shape()));
  check_floating(logits, "cross_entropy");
  check_index(targets, "cross_entropy", "targets");
  DTRN_CHECK(std::isfinite(expected_grad) && expected_grad != 0, "cross_entropy: expected_grad ",
             expected_grad, " must be finite and non-zero");
  // Targets may stay on the host (where the data loader made them): counted and checked there, then
  // uploaded without a device synchronisation.
  if (!targets.device().is_cpu()) check_same_device(logits, targets, "cross_entropy");
  const int64_t n = logits.size(0), v = logits.size(1);
  const int64_t classes = num_classes == -1 ? v : num_classes;
  DTRN_CHECK(classes >= 1 && classes <= v, "cross_entropy: num_classes ", num_classes,
             " must be -1 or in [1, V] for logits ", shape_str(logits.shape()));
  // The mean needs the kept-row count on the host; reading the targets there also checks them with
  // a clear message (an out-of-range target would make a kernel read outside its row).
  int64_t count = 0;
  const std::vector<int64_t> values = targets.to_ints();
  for (int64_t row = 0; row < n; ++row) {
    const int64_t t = values[row];
    if (t == ignore_index) continue;
    DTRN_CHECK(t >= 0 && t < classes, "cross_entropy: target ", t, " of row ", row,
               " is outside [0, ", classes, ") and is not ignore_index ", ignore_index);
    ++count;
  }

  const DType stats = stats_dtype(logits.dtype());
  if (count == 0) {
    return record("cross_entropy", Tensor::zeros({}, stats, logits.device()), {logits, targets},
                  [shape = logits.shape(), dtype = logits.dtype(),
                   device = logits.device()](const Tensor&) -> std::vector<Tensor> {
                    return {Tensor::zeros(shape, dtype, device), Tensor()};
                  });
  }
  Tensor l = kernel_input(logits);
  Tensor tg = targets.to(logits.device()).contiguous();
  Tensor lse = Tensor::empty({n}, stats, logits.device());
  Tensor losses = Tensor::empty({n}, stats, logits.device());
  const double mean = 1.0 / static_cast<double>(count);
  if (!needs_grad({logits})) {
    backend_of(l).cross_entropy(l, tg, ignore_index, classes, losses, lse);
    return scale(sum(losses), mean);
  }
  // The gradient for the expected upstream, made in the forward's pass. The coefficient is the one the
  // backward kernel forms from an upstream held in the statistics' dtype, so the two agree bit for bit.
  const double upstream =
      stats == DType::kF64 ? expected_grad : static_cast<double>(static_cast<float>(expected_grad));
  Tensor dlogits = Tensor::empty(l.shape(), l.dtype(), l.device());
  backend_of(l).cross_entropy_fused(l, tg, ignore_index, classes, upstream * mean, losses, lse, dlogits);
  Tensor out = scale(sum(losses.detach()), mean);
  return record("cross_entropy", out, {logits, targets},
                [dlogits, upstream, stats](const Tensor& grad) -> std::vector<Tensor> {
                  if (grad.known_value() == upstream) return {dlogits, Tensor()};
                  // An upstream the host does not know (or another value): scale on the device.
                  Tensor ratio = scale(grad.detach().to(stats).contiguous(), 1.0 / upstream);
                  if (dlogits.dtype() == DType::kBF16) {
                    return {mul(dlogits.to(DType::kF32), ratio.to(DType::kF32)).to(DType::kBF16), Tensor()};
                  }
                  return {mul(dlogits, ratio.to(dlogits.dtype())), Tensor()};
                });
}

}  // namespace dtrn
