// TensorParallelOps: what a tensor-parallel DtrnModel needs from its TP group, as an interface, so
// that model/ does not depend on parallel/ (parallel/tensor_parallel.h implements it over a
// Communicator).
//
// The model runs in Megatron-LM's form (Note [Tensor-parallel DTRNet] in model.h): the residual
// stream is replicated on every TP rank, each rank holds a slice of the heads, of the MLP's hidden
// units and of the vocabulary, and the differentiable pairs below join the replicated and the split
// parts. Every call is a collective over the TP group, in forward and in backward: all TP ranks run
// the same graph.
//
// Ownership: the model keeps a pointer; the implementation must outlive it. Not thread-safe.
#pragma once

#include "dtrn/runtime/tensor.h"

namespace dtrn::model {

class TensorParallelOps {
 public:
  virtual ~TensorParallelOps() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Identity forward; the gradient is summed over the group (the input was replicated and each
  // rank's branch holds part of its gradient).
  virtual Tensor copy_to(const Tensor& x) = 0;
  // Sum over the group forward (each rank held a partial sum); identity backward.
  virtual Tensor reduce_from(const Tensor& x) = 0;
  // x [..., n] on each rank -> [..., size() * n], rank r's x at columns r*n ..; backward keeps each
  // rank's columns.
  virtual Tensor gather_from(const Tensor& x) = 0;
  // In place, no gradient: every rank's t becomes the elementwise max over the group (agreement
  // checks).
  virtual void all_reduce_max(const Tensor& t) = 0;
};

// The pairs for a model that may run without tensor parallelism (tp null: the identity).
inline Tensor copy_to_tensor_parallel(TensorParallelOps* tp, const Tensor& x) {
  return tp ? tp->copy_to(x) : x;
}
inline Tensor reduce_from_tensor_parallel(TensorParallelOps* tp, const Tensor& x) {
  return tp ? tp->reduce_from(x) : x;
}

}  // namespace dtrn::model
