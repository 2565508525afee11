#include "step_sums.h"

#include <cmath>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::train {

void StepSums::add(const model::ForwardResult& r, int64_t accum, std::vector<model::LayerRouting>* layers) {
  NoGradGuard no_grad;
  const double w = 1.0 / static_cast<double>(accum);
  accumulate(&loss_, r.loss, w);
  accumulate(&ce_, r.ce, w);
  accumulate(&sparsity_, r.routing.sparsity, w);
  accumulate(&balance_, r.routing.balance, w);
  if (layers->empty()) {
    *layers = r.layers;
    for (auto& l : *layers) {
      l.f = 0;
      l.s = Tensor();
    }
  }
  for (size_t i = 0; i < r.layers.size(); ++i) {
    (*layers)[i].f += r.layers[i].f * w;
    accumulate(&(*layers)[i].s, r.layers[i].s, w);
    (*layers)[i].fallback = (*layers)[i].fallback || r.layers[i].fallback;
  }
}

StepSums::Values StepSums::read(const Tensor& grad_norm_sq, std::vector<model::LayerRouting>* layers) {
  NoGradGuard no_grad;
  std::vector<Tensor> parts;
  auto put = [&](const Tensor& t) {
    parts.push_back((t.defined() ? t : Tensor::zeros({}, DType::kF64, grad_norm_sq.device()))
                        .reshape({1})
                        .to(DType::kF64));
  };
  for (const Tensor& t : {loss_, ce_, sparsity_, balance_, grad_norm_sq}) put(t);
  for (const auto& l : *layers) put(l.s);
  const std::vector<double> host = concat(parts, 0).to_vector();
  Values v{host[0], host[1], host[2], host[3], std::sqrt(host[4])};
  for (size_t i = 0; i < layers->size(); ++i) {
    (*layers)[i].s = Tensor::full({}, host[5 + i], DType::kF64);
  }
  return v;
}

void StepSums::accumulate(Tensor* sum, const Tensor& term, double w) {
  if (!term.defined()) return;
  Tensor t = scale(term.detach(), w);
  *sum = sum->defined() ? dtrn::add(*sum, t) : t;
}

std::vector<LayerSpread> reduce_step_over_dp(parallel::Communicator& dp, StepSums::Values* v,
                                             std::vector<model::LayerRouting>* layers) {
  const size_t n = layers->size();
  std::vector<LayerSpread> spread(n);
  for (size_t i = 0; i < n; ++i) spread[i] = {(*layers)[i].f, (*layers)[i].f};
  if (dp.size() == 1) return spread;
  std::vector<double> avg = {v->loss, v->ce, v->sparsity, v->balance};
  std::vector<double> max;  // f, -f, fallback per layer: min is max of -f
  for (const auto& l : *layers) {
    avg.push_back(l.f);
    avg.push_back(l.s.item());
    max.insert(max.end(), {l.f, -l.f, l.fallback ? 1.0 : 0.0});
  }
  Tensor a = Tensor::from_vector(avg, {static_cast<int64_t>(avg.size())}, DType::kF64);
  Tensor m = Tensor::from_vector(max, {static_cast<int64_t>(max.size())}, DType::kF64);
  dp.all_reduce(a, parallel::ReduceOp::kAvg);
  if (n > 0) dp.all_reduce(m, parallel::ReduceOp::kMax);
  avg = a.to_vector();
  max = m.to_vector();
  v->loss = avg[0];
  v->ce = avg[1];
  v->sparsity = avg[2];
  v->balance = avg[3];
  for (size_t i = 0; i < n; ++i) {
    (*layers)[i].f = avg[4 + 2 * i];
    (*layers)[i].s = Tensor::full({}, avg[5 + 2 * i], DType::kF64);
    (*layers)[i].fallback = max[3 * i + 2] > 0;
    spread[i] = {-max[3 * i + 1], max[3 * i]};
  }
  return spread;
}

}  // namespace dtrn::train
