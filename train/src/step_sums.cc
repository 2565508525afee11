#include "step_sums.h"

#include <cmath>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::train {

void StepSums::add(const model::ForwardResult& r, int64_t accum, std::vector<LayerSums>* layers) {
  NoGradGuard no_grad;
  const double w = 1.0 / static_cast<double>(accum);
  accumulate(&loss_, r.loss, w);
  accumulate(&ce_, r.ce, w);
  accumulate(&sparsity_, r.routing.sparsity, w);
  accumulate(&balance_, r.routing.balance, w);
  accumulate(&lagrangian_, r.routing.lagrangian, w);
  accumulate(&z_loss_, r.routing.z_loss, w);
  if (layers->empty()) {
    layers->resize(r.layers.size());
    for (size_t i = 0; i < r.layers.size(); ++i) (*layers)[i].layer = r.layers[i].layer;
  }
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const model::LayerRouting& m = r.layers[i];
    LayerSums& l = (*layers)[i];
    l.f += m.f * w;
    accumulate(&l.s, m.s, w);
    accumulate(&l.quantiles, m.quantiles, w);
    l.fallbacks += m.fallback ? 1 : 0;
    l.collapsed = l.collapsed || m.threshold_routed == 0 || m.threshold_routed == m.tokens;
  }
}

StepSums::Values StepSums::read(const Tensor& grad_norm_sq, std::vector<LayerSums>* layers) {
  NoGradGuard no_grad;
  std::vector<Tensor> parts;
  auto put = [&](const Tensor& t, int64_t n) {
    parts.push_back((t.defined() ? t : Tensor::zeros({n}, DType::kF64, grad_norm_sq.device()))
                        .reshape({n})
                        .to(DType::kF64));
  };
  for (const Tensor& t : {loss_, ce_, sparsity_, balance_, lagrangian_, z_loss_, grad_norm_sq}) put(t, 1);
  for (const auto& l : *layers) {
    put(l.s, 1);
    put(l.quantiles, model::kMeasuredQuantiles);
  }
  const std::vector<double> host = concat(parts, 0).to_vector();
  Values v{host[0], host[1], host[2], host[3], host[4], host[5], std::sqrt(host[6])};
  size_t at = 7;
  for (auto& l : *layers) {
    l.s_value = host[at++];
    l.quantile_values.assign(host.begin() + at, host.begin() + at + model::kMeasuredQuantiles);
    at += model::kMeasuredQuantiles;
  }
  return v;
}

void StepSums::accumulate(Tensor* sum, const Tensor& term, double w) {
  if (!term.defined()) return;
  Tensor t = scale(term.detach(), w);
  *sum = sum->defined() ? dtrn::add(*sum, t) : t;
}

std::vector<LayerSpread> reduce_step_over_dp(parallel::Communicator& dp, StepSums::Values* v,
                                             std::vector<LayerSums>* layers) {
  const size_t n = layers->size();
  std::vector<LayerSpread> spread(n);
  for (size_t i = 0; i < n; ++i) spread[i] = {(*layers)[i].f, (*layers)[i].f};
  if (dp.size() == 1) return spread;
  // Averaged: the loss terms, then per layer f, s and the quantiles. Summed: per layer the fallback
  // count. Max: per layer f, -f (min is max of -f) and collapse.
  std::vector<double> avg = {v->loss, v->ce, v->sparsity, v->balance, v->lagrangian, v->z_loss};
  std::vector<double> sum, max;
  for (const auto& l : *layers) {
    avg.push_back(l.f);
    avg.push_back(l.s_value);
    avg.insert(avg.end(), l.quantile_values.begin(), l.quantile_values.end());
    sum.push_back(static_cast<double>(l.fallbacks));
    max.insert(max.end(), {l.f, -l.f, l.collapsed ? 1.0 : 0.0});
  }
  auto reduce = [&](std::vector<double>* values, parallel::ReduceOp op) {
    if (values->empty()) return;
    Tensor t = Tensor::from_vector(*values, {static_cast<int64_t>(values->size())}, DType::kF64);
    dp.all_reduce(t, op);
    *values = t.to_vector();
  };
  reduce(&avg, parallel::ReduceOp::kAvg);
  reduce(&sum, parallel::ReduceOp::kSum);
  reduce(&max, parallel::ReduceOp::kMax);
  v->loss = avg[0];
  v->ce = avg[1];
  v->sparsity = avg[2];
  v->balance = avg[3];
  v->lagrangian = avg[4];
  v->z_loss = avg[5];
  size_t at = 6;
  for (size_t i = 0; i < n; ++i) {
    LayerSums& l = (*layers)[i];
    l.f = avg[at++];
    l.s_value = avg[at++];
    for (double& q : l.quantile_values) q = avg[at++];
    l.fallbacks = static_cast<int64_t>(std::llround(sum[i]));
    l.collapsed = max[3 * i + 2] > 0;
    spread[i] = {-max[3 * i + 1], max[3 * i]};
  }
  return spread;
}

}  // namespace dtrn::train
