#include "dtrn/model/routing_loss.h"

#include "dtrn/runtime/ops.h"

namespace dtrn::model {

RoutingTerms routing_terms(const std::vector<RoutingStats>& layers, double target_fraction) {
  RoutingTerms out;
  if (layers.empty()) return out;
  double f_total = 0;
  Tensor weighted, balance;
  for (const RoutingStats& l : layers) {
    const double f = l.f();
    f_total += f;
    Tensor term = scale(l.s, f);
    weighted = weighted.defined() ? add(weighted, term) : term;
    Tensor dev = add_scalar(l.s, -target_fraction);
    Tensor sq = mul(dev, dev);
    balance = balance.defined() ? add(balance, sq) : sq;
  }
  if (f_total > 0) out.sparsity = scale(weighted, 1.0 / f_total);
  out.balance = scale(balance, 1.0 / static_cast<double>(layers.size()));
  return out;
}

}  // namespace dtrn::model
