#include "dtrn/runtime/optim.h"

#include <cmath>
#include <numbers>

#include "backend.h"
#include "dtrn/runtime/autograd.h"

namespace dtrn {

AdamW::AdamW(std::vector<ParamGroupEntry> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  for (const auto& e : params_) {
    DTRN_CHECK(e.param.is_leaf() && e.param.is_contiguous(), "AdamW: parameter '", e.name,
               "' must be a contiguous leaf");
    // Moments in f32 (f64 for f64 parameters, as the gradient checks use).
    const DType mt = e.param.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
    m_.push_back(Tensor::zeros(e.param.shape(), mt, e.param.device()));
    v_.push_back(Tensor::zeros(e.param.shape(), mt, e.param.device()));
  }
}

void AdamW::step(double lr) {
  NoGradGuard no_grad;
  ++step_;
  AdamWArgs args;
  args.lr = lr;
  args.beta1 = options_.beta1;
  args.beta2 = options_.beta2;
  args.eps = options_.eps;
  args.bias_correction1 = 1 - std::pow(options_.beta1, static_cast<double>(step_));
  args.bias_correction2 = 1 - std::pow(options_.beta2, static_cast<double>(step_));
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].param;
    Tensor g = p.grad();
    if (!g.defined() || p.numel() == 0) continue;
    DTRN_CHECK(g.dtype() == p.dtype(), "AdamW: gradient of '", params_[i].name, "' is ",
               g.describe(), ", parameter is ", p.describe());
    args.weight_decay = params_[i].decay ? options_.weight_decay : 0.0;
    backend_for(p.device()).adamw(p, g.contiguous(), m_[i], v_[i], args);
  }
}

void AdamW::zero_grad() {
  for (auto& e : params_) e.param.zero_grad();
}

double grad_global_norm(const std::vector<Tensor>& params) {
  double total = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined() && g.numel() > 0) total += backend_for(g.device()).sum_squares(g.contiguous());
  }
  return std::sqrt(total);
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
