#include "dtrn/model/vocab_parallel.h"

#include <algorithm>
#include <vector>

#include "dtrn/runtime/check.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::model {

Tensor vocab_parallel_embedding(const Tensor& weight_shard, const Tensor& ids,
                                TensorParallelOps& tp) {
  const int64_t rows = weight_shard.size(0), lo = tp.rank() * rows;
  const Device device = weight_shard.device();
  std::vector<int64_t> local = ids.to_ints();
  std::vector<double> held(local.size());
  for (size_t i = 0; i < local.size(); ++i) {
    held[i] = local[i] >= lo && local[i] < lo + rows ? 1.0 : 0.0;
    local[i] = held[i] != 0 ? local[i] - lo : 0;
  }
  Shape mask_shape = ids.shape();
  mask_shape.push_back(1);
  Tensor mask = Tensor::from_vector(held, mask_shape, weight_shard.dtype(), device);
  Tensor rows_here =
      embedding(weight_shard, Tensor::from_ints(local, ids.shape(), DType::kI32, device));
  return tp.reduce_from(mul(rows_here, mask));
}

Tensor vocab_parallel_cross_entropy(const Tensor& logits_shard, const Tensor& targets,
                                    int64_t ignore_index, int64_t num_classes,
                                    TensorParallelOps& tp) {
  DTRN_CHECK(logits_shard.dim() == 2 && targets.numel() == logits_shard.size(0),
             "vocab_parallel_cross_entropy: logits ", logits_shard.describe(), ", targets ",
             targets.describe());
  const int64_t n = logits_shard.size(0), width = logits_shard.size(1), lo = tp.rank() * width;
  const int64_t classes = num_classes < 0 ? width * tp.size() : num_classes;
  // The padding columns beyond num_classes lie in the last ranks' slices; each rank keeps its real
  // ones.
  const int64_t valid = std::clamp<int64_t>(classes - lo, 0, width);
  DTRN_CHECK(valid > 0, "vocab_parallel_cross_entropy: TP rank ", tp.rank(),
             " holds only padding columns (", classes, " classes, ", width, " per rank)");
  const Device device = logits_shard.device();
  Tensor logits = valid < width ? logits_shard.narrow(1, 0, valid).contiguous() : logits_shard;

  // log sum_v exp(z_v) over the whole vocabulary: the log-sum-exp of the ranks' log-sum-exps.
  Tensor lse =
      logsumexp(tp.gather_from(logsumexp(logits).reshape({n, 1})));  // [N], f32 (f64 for f64)

  std::vector<int64_t> counted, held_rows, held_flat;
  const std::vector<int64_t> t = targets.to_ints();
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) continue;
    DTRN_CHECK(t[i] >= 0 && t[i] < classes, "vocab_parallel_cross_entropy: target ", t[i],
               " at row ", i, " is outside [0, ", classes, ")");
    counted.push_back(i);
    if (t[i] >= lo && t[i] < lo + valid) {
      held_rows.push_back(i);
      held_flat.push_back(i * valid + t[i] - lo);
    }
  }
  // Each counted row's target logit, from the one rank whose columns hold it (zero on the others).
  Tensor picked = Tensor::zeros({n, 1}, lse.dtype(), device);
  if (!held_rows.empty()) {
    const int64_t m = static_cast<int64_t>(held_rows.size());
    Tensor values = index_select(logits.reshape({n * valid}), 0,
                                 Tensor::from_ints(held_flat, {m}, DType::kI64, device));
    picked = scatter_rows({values.to(lse.dtype()).reshape({m, 1})},
                          {Tensor::from_ints(held_rows, {m}, DType::kI64, device)}, n);
  }
  Tensor target_logit = tp.reduce_from(picked).reshape({n});
  if (counted.empty()) return Tensor::zeros({}, lse.dtype(), device);
  const int64_t c = static_cast<int64_t>(counted.size());
  return mean(index_select(sub(lse, target_logit), 0,
                           Tensor::from_ints(counted, {c}, DType::kI64, device)));
}

}  // namespace dtrn::model
