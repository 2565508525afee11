// The vocabulary-parallel ends of a tensor-parallel DtrnModel (Megatron-LM's VocabParallelEmbedding
// and vocab_parallel_cross_entropy): TP rank r of P holds rows r*V/P .. (r+1)*V/P - 1 of the
// (padded) embedding, which is also the tied LM head, so the logits come out split by vocabulary
// column. Every call is a collective over the TP group (tensor_parallel_ops.h).
#pragma once

#include <cstdint>

#include "dtrn/model/tensor_parallel_ops.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn::model {

// weight_shard [V/P, C], ids i32/i64 [...] (global ids, any device) -> [..., C], replicated: each
// id's row from the rank that holds it (the others look up a zeroed row), summed over the group.
// The gradient reaches the holder's row only.
Tensor vocab_parallel_embedding(const Tensor& weight_shard, const Tensor& ids,
                                TensorParallelOps& tp);

// The mean cross-entropy of cross_entropy() (ops.h) over logits split by column: logits_shard [N,
// V/P] is this rank's columns r*V/P ..; targets i32/i64 [N] (global ids, any device); only the
// first num_classes columns of the whole take part. Returns the same f32/f64 scalar on every rank.
// Each rank's log-sum-exp over its columns is gathered and combined, and the target's logit comes
// from the rank that holds it, so the gradient of each rank's logits is its columns of softmax -
// one_hot.
Tensor vocab_parallel_cross_entropy(const Tensor& logits_shard, const Tensor& targets,
                                    int64_t ignore_index, int64_t num_classes,
                                    TensorParallelOps& tp);

}  // namespace dtrn::model
