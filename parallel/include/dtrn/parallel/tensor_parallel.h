// Tensor parallelism's building blocks in Megatron-LM's form: differentiable communication pairs over the
// TP group, and the column- and row-parallel linears composed from them. With x replicated on every TP
// rank:
//   column_parallel_linear(x, W_r) = x W_r^T       W_r: rows r*out/tp .. of W [out, in]; output sharded
//   row_parallel_linear(y_r, V_r) = sum_r y_r V_r^T  V_r: columns r*in/tp .. of V [out, in]; output replicated
// so an MLP down(swiglu(gate x, up x)) runs as column(gate), column(up), swiglu, row(down) with one
// all-reduce forward (in row_parallel_linear) and one backward (in copy_to_tensor_parallel).
//
// Every call is a collective over `tp` (also in backward): all TP ranks run the same graph.
#pragma once

#include "dtrn/model/tensor_parallel_ops.h"
#include "dtrn/parallel/communicator.h"

namespace dtrn::parallel {

// Identity forward; the gradient is all-reduced (sum) over tp: the input was replicated, and each rank's
// branch contributes part of its gradient.
Tensor copy_to_tensor_parallel(const Tensor& x, Communicator& tp);
// All-reduce (sum) forward; identity backward: each rank held a partial sum.
Tensor reduce_from_tensor_parallel(const Tensor& x, Communicator& tp);
// x [..., n] on each rank -> [..., tp * n], rank r's x at columns r*n ..; backward keeps each rank's columns.
Tensor gather_from_tensor_parallel(const Tensor& x, Communicator& tp);

// x [..., in] (replicated), w_shard [out/tp, in] -> [..., out/tp], or [..., out] when gather_output.
Tensor column_parallel_linear(const Tensor& x, const Tensor& w_shard, Communicator& tp, bool gather_output = false);
// x_shard [..., in/tp], w_shard [out, in/tp] -> [..., out], replicated.
Tensor row_parallel_linear(const Tensor& x_shard, const Tensor& w_shard, Communicator& tp);

// The tensor-parallel DtrnModel's view of its TP group (model/tensor_parallel_ops.h): the pairs above
// over `tp`, which must outlive it.
class TensorParallelGroup final : public model::TensorParallelOps {
 public:
  explicit TensorParallelGroup(Communicator& tp) : tp_(tp) {}
  int rank() const override { return tp_.rank(); }
  int size() const override { return tp_.size(); }
  Tensor copy_to(const Tensor& x) override { return copy_to_tensor_parallel(x, tp_); }
  Tensor reduce_from(const Tensor& x) override { return reduce_from_tensor_parallel(x, tp_); }
  Tensor gather_from(const Tensor& x) override { return gather_from_tensor_parallel(x, tp_); }
  void all_reduce_max(const Tensor& t) override { tp_.all_reduce(t, ReduceOp::kMax); }

 private:
  Communicator& tp_;
};

}  // namespace dtrn::parallel
