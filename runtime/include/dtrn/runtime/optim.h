// AdamW with decoupled weight decay (Loshchilov & Hutter), global-norm gradient clipping, and learning-rate
// schedules. The optimizer owns its moment buffers (fp32, on each parameter's device); parameters are
// updated in place under no-grad.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dtrn/runtime/tensor.h"

namespace dtrn {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

struct ParamGroupEntry {
  std::string name;
  Tensor param;       // the master weights the update writes (f32; f64 in gradient checks)
  bool decay = true;  // false for biases and norm weights
  // Optional: the lower-precision copy that the forward reads (bf16 training). Its .grad (f32, see
  // autograd.cc) is the gradient, and every update rewrites it from param.
  Tensor compute;
  // A tensor-parallel slice (its gradient differs per TP rank): its squared norm is summed over the TP
  // group (ShardNormSum). Replicated parameters (false) have equal gradients on every TP rank and count once.
  bool sharded = false;
};

// Sums, in place, squared gradient norms (an f64 tensor on the parameters' device) over a group of ranks.
// As AdamW's shard norm sum, over the TP group: the global norm of a tensor-parallel model is that sum
// over its sharded parameters plus the squared norm of its replicated ones, taken once.
using ShardNormSum = std::function<void(const Tensor& norm_sq)>;

class AdamW {
 public:
  // All parameters live on one device.
  AdamW(std::vector<ParamGroupEntry> params, AdamWOptions options);

  // One update with learning rate lr, using each parameter's gradient (parameters without one are
  // skipped).
  //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  m^ = m/(1-b1^t);  v^ = v/(1-b2^t)
  //   p -= lr * (m^ / (sqrt(v^) + eps) + wd * p)   (wd only where decay is set)
  void step(double lr);
  // The same update with every gradient first scaled by min(1, max_norm / ||g||) over all gradients
  // together (max_norm <= 0: no clipping). Norm, clipping and update run on the parameters' device with
  // no host synchronisation; returns ||g||^2 before clipping, a one-element f64 tensor on that device.
  Tensor clip_and_step(double lr, double max_norm);
  // Zeroes the gradient buffers in place; they are kept for the next accumulation.
  void zero_grad();
  // Tensor parallelism: the clipping norm of the sharded parameters is summed by `sum` (every TP rank
  // then calls it once per step). Unset: every gradient counts as this process's alone.
  void set_shard_norm_sum(ShardNormSum sum) { shard_norm_sum_ = std::move(sum); }
  // ZeRO-1 (parallel/zero_optimizer.h): the parameters are this rank's pieces of the model, so the norm's
  // parts, an f64 [2] tensor (replicated parameters, then sharded ones), are summed by `sum` over the
  // ranks holding the other pieces, before the sharded part's ShardNormSum. Called once per step.
  void set_piece_norm_sum(ShardNormSum sum) { piece_norm_sum_ = std::move(sum); }

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step) { step_ = step; }
  const std::vector<ParamGroupEntry>& params() const { return params_; }
  // First and second moments, one per parameter, for checkpoints.
  std::vector<Tensor>& exp_avg() { return m_; }
  std::vector<Tensor>& exp_avg_sq() { return v_; }
  const AdamWOptions& options() const { return options_; }

 private:
  std::vector<ParamGroupEntry> params_;
  AdamWOptions options_;
  std::vector<Tensor> m_, v_;
  int64_t step_ = 0;
  ShardNormSum shard_norm_sum_, piece_norm_sum_;
};

// The L2 norm of all gradients together (computed in f64 on the host side of the reduction).
double grad_global_norm(const std::vector<Tensor>& params);
// The sum of the squares of all gradients together: an f64 [1] tensor on `device` (where every gradient
// lives: contiguous, f32 on a GPU), computed there with no host synchronisation.
Tensor grad_sum_squares(const std::vector<Tensor>& params, Device device);
// Scales every gradient by max_norm / norm when norm > max_norm; returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Learning rate at `step` (0-based): linear warm-up from 0 to peak over warmup_steps, then cosine (or
// linear) decay from peak to min_lr at total_steps, constant min_lr after.
enum class DecayShape { kCosine, kLinear };
double lr_at(int64_t step, int64_t warmup_steps, int64_t total_steps, double peak_lr, double min_lr,
             DecayShape shape = DecayShape::kCosine);

}  // namespace dtrn
