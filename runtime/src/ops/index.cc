// Gathers, scatters, embedding lookup, concat and split along one dimension, with their gradients:
// index_select and index_add are each other's adjoints; concat and split (narrow) likewise.
#include "ops/op_util.h"

namespace dtrn {
namespace {

struct Geometry3 {
  int64_t outer = 1, n = 1, inner = 1;
};

Geometry3 around(const Shape& s, int64_t dim) {
  Geometry3 g;
  for (int64_t i = 0; i < dim; ++i) g.outer *= s[i];
  g.n = s[dim];
  for (size_t i = dim + 1; i < s.size(); ++i) g.inner *= s[i];
  return g;
}

// out[..., index[i], ...] += src[..., i, ...] along dim, in place on out's buffer.
void add_rows_into(const Tensor& out, int64_t dim, const Tensor& idx, const Tensor& src) {
  const Geometry3 g = around(out.shape(), dim);
  if (idx.numel() > 0 && g.outer * g.inner > 0) {
    backend_of(out).index_add(out, g.outer, g.n, g.inner, idx, src.contiguous().detach());
  }
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  dim = wrap_dim(dim, x.dim(), "index_select");
  check_index(index, x, "index_select");
  Tensor in = x.contiguous().detach(), idx = index.contiguous();
  const Geometry3 g = around(in.shape(), dim);
  Shape out_shape = in.shape();
  out_shape[dim] = idx.numel();
  Tensor out = Tensor::empty(out_shape, in.dtype(), in.device());
  if (out.numel() > 0) backend_of(in).index_select(in, g.outer, g.n, g.inner, idx, out);
  Shape in_shape = x.shape();
  return record("index_select", out, {x}, [in_shape, dim, idx](const Tensor& grad) -> std::vector<Tensor> {
    // Backward runs without recording, so the rows are added straight into the zeroed gradient
    // (index_add would clone it first: one more pass over a whole embedding table).
    Tensor dx = Tensor::zeros(in_shape, grad.dtype(), grad.device());
    add_rows_into(dx, dim, idx, grad);
    return {dx};
  });
}

Tensor scatter_rows(const std::vector<Tensor>& parts, const std::vector<Tensor>& indices, int64_t rows) {
  DTRN_CHECK(!parts.empty() && parts.size() == indices.size(), "scatter_rows: ", parts.size(),
             " parts and ", indices.size(), " index lists");
  const Tensor& first = parts[0];
  DTRN_CHECK(first.dim() >= 1, "scatter_rows: parts need a row dimension, got ", first.describe());
  Shape out_shape = first.shape();
  out_shape[0] = rows;
  int64_t covered = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    check_index(indices[i], parts[i], "scatter_rows");
    check_same_kind(first, parts[i], "scatter_rows");
    Shape want = out_shape;
    want[0] = indices[i].numel();
    DTRN_CHECK(parts[i].shape() == want, "scatter_rows: part ", i, " is ", shape_str(parts[i].shape()),
               ", expected ", shape_str(want));
    covered += want[0];
  }
  DTRN_CHECK(covered <= rows, "scatter_rows: ", covered, " indices for ", rows, " rows");
  Tensor out = covered == rows ? Tensor::empty(out_shape, first.dtype(), first.device())
                               : Tensor::zeros(out_shape, first.dtype(), first.device());
  const Geometry3 g = around(out_shape, 0);
  std::vector<Tensor> idx;
  for (size_t i = 0; i < parts.size(); ++i) {
    idx.push_back(indices[i].contiguous());
    if (idx.back().numel() > 0 && g.inner > 0) {
      backend_of(out).index_copy(out, g.outer, g.n, g.inner, idx.back(), parts[i].contiguous().detach());
    }
  }
  return record("scatter_rows", out, parts, [idx](const Tensor& grad) -> std::vector<Tensor> {
    std::vector<Tensor> grads;
    for (const Tensor& i : idx) grads.push_back(index_select(grad, 0, i));
    return grads;
  });
}

Tensor index_add(const Tensor& base, int64_t dim, const Tensor& index, const Tensor& src) {
  dim = wrap_dim(dim, base.dim(), "index_add");
  check_index(index, base, "index_add");
  check_same_kind(base, src, "index_add");
  check_floating(base, "index_add");
  Shape expect = base.shape();
  expect[dim] = index.numel();
  DTRN_CHECK(src.shape() == expect, "index_add: source ", shape_str(src.shape()), " vs expected ",
             shape_str(expect), " (base ", shape_str(base.shape()), ", ", index.numel(), " indices)");
  Tensor idx = index.contiguous();
  Tensor out = base.detach().clone();
  add_rows_into(out, dim, idx, src);
  return record("index_add", out, {base, src}, [dim, idx](const Tensor& grad) -> std::vector<Tensor> {
    return {grad, index_select(grad, dim, idx)};
  });
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  DTRN_CHECK(weight.dim() == 2, "embedding: weight must be [V, C], got ", weight.describe());
  Shape out_shape = ids.shape();
  out_shape.push_back(weight.size(1));
  return index_select(weight, 0, ids.reshape({ids.numel()})).reshape(out_shape);
}

Tensor concat(const std::vector<Tensor>& parts, int64_t dim) {
  DTRN_CHECK(!parts.empty(), "concat of no tensors");
  const Tensor& first = parts[0];
  dim = wrap_dim(dim, first.dim(), "concat");
  Shape out_shape = first.shape();
  out_shape[dim] = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& p : parts) {
    check_same_kind(first, p, "concat");
    Shape a = p.shape(), b = first.shape();
    DTRN_CHECK(a.size() == b.size(), "concat: ", shape_str(a), " vs ", shape_str(b));
    a[dim] = b[dim] = 0;
    DTRN_CHECK(a == b, "concat: shapes ", shape_str(p.shape()), " and ", shape_str(first.shape()),
               " differ outside dimension ", dim);
    sizes.push_back(p.size(dim));
    out_shape[dim] += p.size(dim);
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  int64_t offset = 0;
  for (const Tensor& p : parts) {
    if (p.numel() > 0) backend_of(out).copy(p.detach(), out.narrow(dim, offset, p.size(dim)).detach());
    offset += p.size(dim);
  }
  return record("concat", out, parts, [sizes, dim](const Tensor& g) -> std::vector<Tensor> {
    std::vector<Tensor> grads;
    int64_t off = 0;
    for (int64_t s : sizes) {
      grads.push_back(g.narrow(dim, off, s).contiguous());
      off += s;
    }
    return grads;
  });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  DTRN_CHECK(total == x.size(dim), "split: sizes add up to ", total, " but dimension ", dim, " of ",
             x.describe(), " has ", x.size(dim));
  std::vector<Tensor> parts;
  int64_t offset = 0;
  for (int64_t s : sizes) {
    parts.push_back(x.narrow(dim, offset, s));
    offset += s;
  }
  return parts;
}

}  // namespace dtrn
