#include "dtrn/model/routing_loss.h"

#include "dtrn/runtime/check.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::model {
namespace {

void accumulate(Tensor* sum, const Tensor& term) { *sum = sum->defined() ? add(*sum, term) : term; }

}  // namespace

RoutingTerms routing_terms(const std::vector<RoutingStats>& layers, const RoutingConfig& config,
                           const std::vector<double>& multipliers) {
  RoutingTerms out;
  if (layers.empty()) return out;
  DTRN_CHECK(multipliers.empty() || multipliers.size() == layers.size(),
             "routing_terms: ", multipliers.size(), " multipliers for ", layers.size(),
             " D layers");
  const double rho = config.target_fraction;
  double f_total = 0;
  Tensor weighted, balance, lagrangian, z_loss;
  for (size_t i = 0; i < layers.size(); ++i) {
    const RoutingStats& l = layers[i];
    const double f = l.f();
    f_total += f;
    accumulate(&weighted, scale(l.s, f));
    const Tensor& m = config.soft_balance() ? l.soft : l.s;
    DTRN_CHECK(m.defined(), "routing_terms: layer ", i, " recorded no soft fraction");
    Tensor dev = add_scalar(m, -rho);
    accumulate(&balance, mul(dev, dev));
    if (!multipliers.empty()) accumulate(&lagrangian, scale(dev, multipliers[i]));
    if (l.z_sq.defined()) accumulate(&z_loss, l.z_sq);
  }
  const double inv = 1.0 / static_cast<double>(layers.size());
  if (f_total > 0) out.sparsity = scale(weighted, 1.0 / f_total);
  out.balance = scale(balance, inv);
  if (lagrangian.defined()) out.lagrangian = scale(lagrangian, inv);
  if (z_loss.defined()) out.z_loss = scale(z_loss, inv);
  return out;
}

}  // namespace dtrn::model
