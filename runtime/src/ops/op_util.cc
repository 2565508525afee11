#include "ops/op_util.h"

namespace dtrn {

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  if (dim < 0) dim += ndim;
  DTRN_CHECK(dim >= 0 && dim < ndim, op, ": dimension ", dim, " out of range for a ", ndim,
             "-d tensor");
  return dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    DTRN_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor broadcast_view(const Tensor& x, const Shape& target) {
  const size_t n = target.size(), lead = n - x.shape().size();
  Shape strides(n, 0);
  for (size_t i = lead; i < n; ++i) {
    const int64_t s = x.shape()[i - lead];
    strides[i] = (s == 1 && target[i] != 1) ? 0 : x.strides()[i - lead];
  }
  return make_view(x, target, strides, x.offset());
}

Tensor expand_copy(const Tensor& x, const Shape& target) {
  Tensor out = Tensor::empty(target, x.dtype(), x.device());
  if (out.numel() > 0) backend_of(x).copy(broadcast_view(x, target), out);
  return out;
}

void check_same_kind(const Tensor& a, const Tensor& b, const char* op) {
  DTRN_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", a.describe(), " vs ", b.describe());
  DTRN_CHECK(a.device() == b.device(), op, ": devices differ: ", a.describe(), " vs ", b.describe());
}

void check_index(const Tensor& index, const Tensor& x, const char* op) {
  DTRN_CHECK(index.dtype() == DType::kI32 || index.dtype() == DType::kI64, op,
             ": index must be i32 or i64, got ", index.describe());
  DTRN_CHECK(index.dim() == 1, op, ": index must be 1-d, got ", index.describe());
  DTRN_CHECK(index.device() == x.device(), op, ": index on ", index.device().str(), ", data on ",
             x.device().str());
}

void check_floating(const Tensor& x, const char* op) {
  DTRN_CHECK(is_floating(x.dtype()), op, ": expects a floating tensor, got ", x.describe());
}

}  // namespace dtrn
