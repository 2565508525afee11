#include "dtrn/parallel/tensor_parallel.h"

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::parallel {
namespace {

// A contiguous copy of x summed over tp.
Tensor all_reduced(const Tensor& x, Communicator& tp) {
  Tensor out = x.detach().clone();
  tp.all_reduce(out, ReduceOp::kSum);
  return out;
}

}  // namespace

Tensor copy_to_tensor_parallel(const Tensor& x, Communicator& tp) {
  return record("copy_to_tensor_parallel", x.detach(), {x},
                [&tp](const Tensor& g) -> std::vector<Tensor> { return {all_reduced(g, tp)}; });
}

Tensor reduce_from_tensor_parallel(const Tensor& x, Communicator& tp) {
  return record("reduce_from_tensor_parallel", all_reduced(x, tp), {x},
                [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

Tensor gather_from_tensor_parallel(const Tensor& x, Communicator& tp) {
  const int64_t n = x.size(-1), rows = x.numel() / n, size = tp.size(), rank = tp.rank();
  Tensor gathered = Tensor::empty({size * rows * n}, x.dtype(), x.device());
  {
    NoGradGuard no_grad;
    tp.all_gather(x.detach().contiguous().reshape({rows * n}), gathered);
  }
  // [tp, rows, n] -> [rows, tp * n]: each rank's columns side by side.
  Shape shape = x.shape();
  shape.back() = size * n;
  Tensor out = gathered.reshape({size, rows, n}).transpose(0, 1).contiguous().reshape(shape);
  return record("gather_from_tensor_parallel", out, {x}, [n, rank](const Tensor& g) -> std::vector<Tensor> {
    return {g.narrow(g.dim() - 1, rank * n, n).contiguous()};
  });
}

Tensor column_parallel_linear(const Tensor& x, const Tensor& w_shard, Communicator& tp, bool gather_output) {
  Tensor y = linear(copy_to_tensor_parallel(x, tp), w_shard);
  return gather_output ? gather_from_tensor_parallel(y, tp) : y;
}

Tensor row_parallel_linear(const Tensor& x_shard, const Tensor& w_shard, Communicator& tp) {
  return reduce_from_tensor_parallel(linear(x_shard, w_shard), tp);
}

}  // namespace dtrn::parallel
