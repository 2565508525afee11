#include "dtrn/parallel/zero_optimizer.h"

#include <algorithm>
#include <map>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/check.h"

namespace dtrn::parallel {

ZeroAdamW::ZeroAdamW(const std::vector<ParamGroupEntry>& params, GradientBuckets& buckets, AdamWOptions options)
    : params_(params), buckets_(buckets) {
  NoGradGuard no_grad;
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < params_.size(); ++i) by_name[params_[i].name] = i;
  const int64_t rank = buckets_.group().rank();
  for (const auto& slot : buckets_.slots()) {
    auto it = by_name.find(slot.name);
    DTRN_CHECK(it != by_name.end(), "ZeroAdamW: bucket slot '", slot.name, "' is not a parameter");
    slot_param_.push_back(it->second);
    const int64_t shard = buckets_.buckets()[slot.bucket].shard.numel();
    const int64_t lo = std::max(slot.offset, rank * shard);
    const int64_t hi = std::min(slot.offset + slot.leaf.numel(), (rank + 1) * shard);
    if (lo < hi) segments_.push_back({it->second, slot.bucket, lo - slot.offset, hi - lo, lo - rank * shard});
  }
  std::vector<ParamGroupEntry> pieces;
  for (const Segment& s : segments_) {
    const ParamGroupEntry& p = params_[s.param];
    Tensor master = segment_view(p.param, s);
    master.set_grad(buckets_.buckets()[s.bucket].shard.narrow(0, s.in_shard, s.length));
    pieces.push_back({p.name + "[" + std::to_string(s.begin) + ":" + std::to_string(s.begin + s.length) + "]",
                      master, p.decay, Tensor(), p.sharded});
  }
  shard_optimizer_ = std::make_unique<AdamW>(std::move(pieces), options);
  // Every gradient element lies in exactly one piece of one rank: the pieces' squared norms summed over
  // the group are the global norm's (its TP-sharded part then summed over the TP group, if set).
  Communicator& group = buckets_.group();
  shard_optimizer_->set_piece_norm_sum([&group](const Tensor& parts) { group.all_reduce(parts, ReduceOp::kSum); });
}

Tensor ZeroAdamW::segment_view(const Tensor& full, const Segment& s) {
  NoGradGuard no_grad;
  return full.detach().reshape({-1}).narrow(0, s.begin, s.length);
}

Tensor ZeroAdamW::clip_and_step(double lr, double max_norm) {
  NoGradGuard no_grad;
  // The global norm, the clipping and the pieces' update, on the device with no host synchronisation
  // (the norm's parts summed by the hooks the constructor and set_shard_norm_sum set).
  Tensor norm_sq = shard_optimizer_->clip_and_step(lr, max_norm);
  const auto& masters = shard_optimizer_->params();
  gather([&](size_t k) { return masters[k].param; }, [&](size_t p) { return params_[p].param; });
  for (const ParamGroupEntry& p : params_) {
    if (p.compute.defined() && !p.compute.same(p.param)) p.compute.copy_(p.param);  // converting in place
  }
  return norm_sq;
}

void ZeroAdamW::zero_grad() {
  for (const auto& b : buckets_.buckets()) {
    b.buffer.fill_(0.0);
    b.shard.fill_(0.0);
  }
}

void ZeroAdamW::gather(const std::function<Tensor(size_t segment)>& piece,
                       const std::function<Tensor(size_t param)>& full) {
  NoGradGuard no_grad;
  Communicator& group = buckets_.group();
  const auto& buckets = buckets_.buckets();
  const auto& slots = buckets_.slots();
  const DType dtype = params_.empty() ? DType::kF32 : params_[0].param.dtype();
  for (size_t b = 0; b < buckets.size(); ++b) {
    const int64_t shard = buckets[b].shard.numel();
    const Device device = buckets[b].shard.device();
    Tensor mine = Tensor::zeros({shard}, dtype, device);
    for (size_t k = 0; k < segments_.size(); ++k) {
      const Segment& s = segments_[k];
      if (s.bucket == static_cast<int64_t>(b)) mine.narrow(0, s.in_shard, s.length).copy_(piece(k));
    }
    Tensor all = Tensor::empty({shard * group.size()}, dtype, device);
    group.all_gather(mine, all);
    if (!full) continue;
    for (int64_t i : buckets[b].slots) {
      const auto& slot = slots[i];
      Tensor dest = full(slot_param_[i]);
      dest.detach().reshape({-1}).copy_(all.narrow(0, slot.offset, slot.leaf.numel()));
    }
  }
}

std::vector<ZeroAdamW::StatePiece> ZeroAdamW::state_pieces() {
  std::vector<StatePiece> out;
  for (size_t k = 0; k < segments_.size(); ++k) {
    out.push_back({params_[segments_[k].param].name, segments_[k].begin, shard_optimizer_->exp_avg()[k],
                   shard_optimizer_->exp_avg_sq()[k]});
  }
  return out;
}

}  // namespace dtrn::parallel
