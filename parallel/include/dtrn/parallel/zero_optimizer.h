// ZeroAdamW: ZeRO stage 1 (Rajbhandari et al.): AdamW whose master-weight update and moments are sharded
// over the DP group. GradientBuckets (shard = true) reduce-scatters each bucket, so rank r holds the
// averaged piece r of every bucket's flat gradient; ZeroAdamW updates exactly the master weights under that
// piece (views into the model's own master tensors, cut where the piece crosses parameters) with moments
// of the piece's size only, then all-gathers the updated pieces so every rank holds every weight again.
// The update is the one plain DP's AdamW makes (same formula, same global-norm clipping: the squared norm
// is summed over the pieces of all ranks), so results agree up to reduction order.
//
// Checkpoints save the moments as they are sharded: state_pieces() names each piece's parameter and its
// place in it, and every DP rank writes its own pieces (train/checkpoint.h); loading fills the pieces of
// whatever layout resumes, so a ZeRO-1 checkpoint resumes with or without ZeRO and with another dp.
//
// Ownership: refers to the buckets and the group (both must outlive it); owns the moments of its pieces.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "dtrn/parallel/grad_buckets.h"
#include "dtrn/runtime/optim.h"

namespace dtrn::parallel {

class ZeroAdamW {
 public:
  // params: the model's parameters in the order given to `buckets` (names match the buckets' slots).
  ZeroAdamW(const std::vector<ParamGroupEntry>& params, GradientBuckets& buckets, AdamWOptions options);

  // After buckets.finish(): clips (global norm over all ranks), updates this rank's pieces, all-gathers
  // the weights and refreshes the compute copies. Returns ||g||^2 before clipping, an f64 [1] tensor.
  Tensor clip_and_step(double lr, double max_norm);
  // Zeroes every gradient buffer for the next step's accumulation.
  void zero_grad();
  // Tensor parallelism: as AdamW::set_shard_norm_sum (optim.h), for the parameters marked sharded.
  void set_shard_norm_sum(ShardNormSum sum) { shard_optimizer_->set_shard_norm_sum(std::move(sum)); }

  // This rank's moments: piece k holds the flattened elements [begin, begin + length) of parameter
  // `param`. The tensors are the optimizer's own (writing into them sets the state).
  struct StatePiece {
    std::string param;
    int64_t begin = 0;
    Tensor exp_avg, exp_avg_sq;
  };
  std::vector<StatePiece> state_pieces();
  int64_t step_count() const { return shard_optimizer_->step_count(); }
  void set_step_count(int64_t step) { shard_optimizer_->set_step_count(step); }

 private:
  struct Segment {
    size_t param = 0;      // index into params_
    int64_t bucket = 0;
    int64_t begin = 0;     // in the parameter's flattened elements
    int64_t length = 0;
    int64_t in_shard = 0;  // offset in the bucket's shard
  };
  // The segment's elements of a full-size tensor of its parameter's shape (a view).
  static Tensor segment_view(const Tensor& full, const Segment& s);
  // Each rank puts piece(k) of its segments k into its piece of each bucket; the all-gathered buckets are
  // copied into full(p) for every parameter p (none where full is empty).
  void gather(const std::function<Tensor(size_t segment)>& piece, const std::function<Tensor(size_t param)>& full);

  std::vector<ParamGroupEntry> params_;
  GradientBuckets& buckets_;
  std::vector<Segment> segments_;
  std::vector<size_t> slot_param_;     // the params_ index of each bucket slot
  std::unique_ptr<AdamW> shard_optimizer_;
};

}  // namespace dtrn::parallel
