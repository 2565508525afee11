// The data movement of a D block as two ops: gather_rows picks the routed tokens' rows for attention,
// combine_paths merges the attention path and the bypass into one tensor before the shared W_O. Each
// replaces a chain of gathers, broadcast products and scatters, whose backward would add rows through
// a sort (index_add's deterministic form), with one pass over the rows.
#include "ops/op_util.h"

namespace dtrn {

Tensor gather_rows(const Tensor& x, const Tensor& index) {
  DTRN_CHECK(x.dim() >= 1, "gather_rows: x needs a row dimension, got ", x.describe());
  check_index(index, x, "gather_rows");
  Tensor in = x.contiguous().detach(), idx = index.contiguous();
  const int64_t n = in.size(0), inner = n > 0 ? in.numel() / n : 0;
  Shape out_shape = in.shape();
  out_shape[0] = idx.numel();
  Tensor out = Tensor::empty(out_shape, in.dtype(), in.device());
  if (out.numel() > 0) backend_of(in).index_select(in, 1, n, inner, idx, out);
  const Shape in_shape = x.shape();
  return record("gather_rows", out, {x}, [in_shape, n, inner, idx](const Tensor& grad) -> std::vector<Tensor> {
    Tensor dx = Tensor::zeros(in_shape, grad.dtype(), grad.device());
    if (grad.numel() > 0) backend_of(dx).index_copy(dx, 1, n, inner, idx, grad.contiguous());
    return {dx};
  });
}

Tensor combine_paths(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed, const Tensor& bypass,
                     int64_t heads) {
  DTRN_CHECK(o.dim() == 2 && v.dim() == 2 && p.dim() == 1, "combine_paths: o [R, H*D], v [N, G*D] and p [N], got ",
             o.describe(), ", ", v.describe(), ", ", p.describe());
  check_same_kind(o, v, "combine_paths");
  check_floating(v, "combine_paths");
  const DType want_p = v.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  DTRN_CHECK(p.dtype() == want_p && p.device() == v.device(), "combine_paths: p must be ", dtype_name(want_p),
             " on ", v.device().str(), ", got ", p.describe());
  for (const Tensor* index : {&routed, &bypass}) {
    DTRN_CHECK(index->dtype() == DType::kI32 && index->dim() == 1 && index->device() == v.device(),
               "combine_paths: routed and bypass must be i32 [R] and [N - R] on ", v.device().str(), ", got ",
               index->describe());
  }
  const int64_t n = v.size(0), r = routed.numel();
  DTRN_CHECK(heads > 0 && o.size(1) % heads == 0, "combine_paths: ", heads, " heads do not divide ", o.describe());
  const int64_t d = o.size(1) / heads;
  DTRN_CHECK(v.size(1) % d == 0 && heads % (v.size(1) / d) == 0, "combine_paths: v ", v.describe(),
             " is not a whole number of KV heads of ", d, " for ", heads, " heads");
  DTRN_CHECK(o.size(0) == r && p.numel() == n && bypass.numel() == n - r, "combine_paths: ", r, " routed and ",
             bypass.numel(), " bypassed rows for o ", o.describe(), ", v ", v.describe(), ", p ", p.describe());
  Tensor oc = o.contiguous().detach(), vc = v.contiguous().detach(), pc = p.contiguous().detach();
  Tensor ri = routed.contiguous(), bi = bypass.contiguous();
  Tensor y = Tensor::empty({n, o.size(1)}, v.dtype(), v.device());
  if (y.numel() > 0) backend_of(y).combine_paths(oc, vc, pc, ri, bi, heads, y);
  return record("combine_paths", y, {o, v, p}, [oc, vc, pc, ri, bi, heads](const Tensor& grad) -> std::vector<Tensor> {
    Tensor d_o = Tensor::empty(oc.shape(), oc.dtype(), oc.device());
    Tensor dv = Tensor::empty(vc.shape(), vc.dtype(), vc.device());
    Tensor dp = Tensor::empty(pc.shape(), pc.dtype(), pc.device());
    if (grad.numel() > 0) {
      backend_of(grad).combine_paths_backward(oc, vc, pc, ri, bi, heads, grad.contiguous(), d_o, dv, dp);
    }
    return {d_o, dv, dp};
  });
}

}  // namespace dtrn
