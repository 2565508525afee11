#include "dtrn/runtime/optim.h"

#include <cmath>
#include <numbers>

#include "backend.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn {

AdamW::AdamW(std::vector<ParamGroupEntry> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  for (const auto& e : params_) {
    DTRN_CHECK(e.param.is_leaf() && e.param.is_contiguous(), "AdamW: parameter '", e.name,
               "' must be a contiguous leaf");
    DTRN_CHECK(e.param.device() == params_[0].param.device(), "AdamW: parameter '", e.name, "' is on ",
               e.param.device().str(), ", '", params_[0].name, "' on ", params_[0].param.device().str());
    DTRN_CHECK(e.param.dtype() == DType::kF32 || e.param.dtype() == DType::kF64, "AdamW: parameter '",
               e.name, "' must be f32 or f64 master weights, got ", e.param.describe());
    if (e.compute.defined()) {
      DTRN_CHECK(e.compute.shape() == e.param.shape() && e.compute.device() == e.param.device(),
                 "AdamW: the compute copy of '", e.name, "' is ", e.compute.describe(), ", the master ",
                 e.param.describe());
    }
    m_.push_back(Tensor::zeros(e.param.shape(), e.param.dtype(), e.param.device()));
    v_.push_back(Tensor::zeros(e.param.shape(), e.param.dtype(), e.param.device()));
  }
}

void AdamW::step(double lr) { clip_and_step(lr, 0.0); }

Tensor AdamW::clip_and_step(double lr, double max_norm) {
  NoGradGuard no_grad;
  const Device device = params_.empty() ? Device::cpu() : params_[0].param.device();
  Tensor norm_sq = Tensor::zeros({1}, DType::kF64, device);
  std::vector<AdamWTensors> entries;
  std::vector<Tensor> grads, sharded_grads;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamGroupEntry& e = params_[i];
    Tensor g = (e.compute.defined() ? e.compute : e.param).grad();
    if (!g.defined() || e.param.numel() == 0) continue;
    DTRN_CHECK(g.dtype() == e.param.dtype(), "AdamW: gradient of '", e.name, "' is ", g.describe(),
               ", the master weights are ", e.param.describe());
    entries.push_back({e.param, g.contiguous(), m_[i], v_[i],
                       e.compute.defined() && !e.compute.same(e.param) ? e.compute : Tensor(),
                       e.decay ? options_.weight_decay : 0.0});
    (shard_norm_sum_ && e.sharded ? sharded_grads : grads).push_back(entries.back().grad);
  }
  ++step_;
  Backend& backend = backend_for(device);
  if (piece_norm_sum_ || shard_norm_sum_) {
    // The replicated and the sharded part, each summed over the ranks its hook names; every rank makes
    // the same calls whatever it holds, since the hooks are collectives.
    Tensor parts = Tensor::zeros({2}, DType::kF64, device);
    if (!grads.empty()) backend.sum_squares_multi(grads, parts.narrow(0, 0, 1));
    if (!sharded_grads.empty()) backend.sum_squares_multi(sharded_grads, parts.narrow(0, 1, 1));
    if (piece_norm_sum_) piece_norm_sum_(parts);
    if (shard_norm_sum_) shard_norm_sum_(parts.narrow(0, 1, 1));
    norm_sq.copy_(add(parts.narrow(0, 0, 1), parts.narrow(0, 1, 1)));
  } else if (!grads.empty()) {
    backend.sum_squares_multi(grads, norm_sq);
  }
  if (entries.empty()) return norm_sq;
  AdamWArgs args;
  args.lr = lr;
  args.beta1 = options_.beta1;
  args.beta2 = options_.beta2;
  args.eps = options_.eps;
  args.weight_decay = 0;
  args.bias_correction1 = 1 - std::pow(options_.beta1, static_cast<double>(step_));
  args.bias_correction2 = 1 - std::pow(options_.beta2, static_cast<double>(step_));
  backend.adamw_multi(entries, args, norm_sq, max_norm);
  return norm_sq;
}

void AdamW::zero_grad() {
  for (auto& e : params_) {
    Tensor g = (e.compute.defined() ? e.compute : e.param).grad();
    if (g.defined()) g.fill_(0.0);
  }
}

double grad_global_norm(const std::vector<Tensor>& params) {
  double total = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined() && g.numel() > 0) total += backend_for(g.device()).sum_squares(g.contiguous());
  }
  return std::sqrt(total);
}

Tensor grad_sum_squares(const std::vector<Tensor>& params, Device device) {
  NoGradGuard no_grad;
  Tensor out = Tensor::zeros({1}, DType::kF64, device);
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined() && g.numel() > 0) grads.push_back(g.contiguous());
  }
  if (!grads.empty()) backend_for(device).sum_squares_multi(grads, out);
  return out;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  const double norm = grad_global_norm(params);
  if (norm > max_norm && norm > 0) {
    const double factor = max_norm / norm;
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      // Leaf gradients own their storage (autograd.cc), so scaling in place touches nothing else.
      if (g.defined() && g.numel() > 0) backend_for(g.device()).affine(g, factor, 0.0, g);
    }
  }
  return norm;
}

double lr_at(int64_t step, int64_t warmup_steps, int64_t total_steps, double peak_lr, double min_lr,
             DecayShape shape) {
  DTRN_CHECK(step >= 0, "lr_at: negative step ", step);
  if (step < warmup_steps) {
    return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  if (step >= total_steps) return min_lr;
  const int64_t decay_steps = total_steps - warmup_steps;
  const double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps);
  const double factor = shape == DecayShape::kCosine ? 0.5 * (1 + std::cos(std::numbers::pi * progress))
                                                     : 1 - progress;
  return min_lr + (peak_lr - min_lr) * factor;
}

}  // namespace dtrn
