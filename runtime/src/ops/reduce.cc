// Sums and means, over everything or one dimension, and sum_to_shape (the adjoint of broadcasting).
#include "ops/op_util.h"

namespace dtrn {
namespace {

// Sum of contiguous x over dimension d, keeping it as size 1.
Tensor sum_keepdim(const Tensor& x, int64_t d) {
  Tensor in = x.contiguous();
  const Shape& s = in.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[i];
  for (size_t i = d + 1; i < s.size(); ++i) inner *= s[i];
  Shape out_shape = s;
  out_shape[d] = 1;
  Tensor out = Tensor::empty(out_shape, in.dtype(), in.device());
  if (out.numel() > 0) {
    if (s[d] == 0) {
      backend_of(in).fill(out, 0.0);
    } else {
      backend_of(in).sum_dim(in, outer, s[d], inner, out);
    }
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) {
  check_floating(x, "sum");
  Tensor out = sum_keepdim(x.detach().reshape({x.numel()}), 0).reshape({});
  Shape in_shape = x.shape();
  return record("sum", out, {x}, [in_shape](const Tensor& g) -> std::vector<Tensor> {
    return {expand_copy(g, in_shape)};
  });
}

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  check_floating(x, "sum");
  dim = wrap_dim(dim, x.dim(), "sum");
  Tensor out = sum_keepdim(x.detach(), dim);
  Shape in_shape = x.shape(), kept = out.shape();
  if (!keepdim) {
    Shape squeezed = in_shape;
    squeezed.erase(squeezed.begin() + dim);
    out = out.reshape(squeezed);
  }
  return record("sum_dim", out, {x}, [in_shape, kept](const Tensor& g) -> std::vector<Tensor> {
    return {expand_copy(g.reshape(kept), in_shape)};
  });
}

Tensor mean(const Tensor& x) {
  DTRN_CHECK(x.numel() > 0, "mean of an empty tensor ", x.describe());
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  const int64_t n = x.size(dim);
  DTRN_CHECK(n > 0, "mean over an empty dimension of ", x.describe());
  return scale(sum(x, dim, keepdim), 1.0 / static_cast<double>(n));
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  DTRN_CHECK(lead >= 0, "sum_to_shape: ", x.describe(), " cannot be summed to ", shape_str(shape));
  Tensor t = x;
  for (int64_t d = 0; d < x.dim(); ++d) {
    const bool leading = d < lead;
    if (leading || (shape[d - lead] == 1 && x.size(d) != 1)) t = sum(t, d, /*keepdim=*/true);
    else DTRN_CHECK(shape[d - lead] == x.size(d), "sum_to_shape: ", x.describe(), " vs ", shape_str(shape));
  }
  return t.reshape(shape);
}

}  // namespace dtrn
