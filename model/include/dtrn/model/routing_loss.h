// The routing terms of the DTRNet loss (spec, "Loss", and the controls of docs/routing-loss.md),
// over the D layers of one micro-batch:
//   S   = (sum_l f_l s_l) / (sum_l f_l)            the reference's sparsity term; undefined when
//   sum f = 0 Bal = (1/|D|) sum_l (m_l - rho)^2              the balance term; m_l = s_l (mean p_a,
//   the spec) or the
//                                                  soft above-threshold fraction (balance_on)
//   Lag = (1/|D|) sum_l mu_l (m_l - rho)           the Lagrangian term, mu_l the multipliers (a
//   number each) Z   = (1/|D|) sum_l mean_t logsumexp(z_t)^2    the router z-loss
// f_l and mu_l are numbers (no gradient); s_l, m_l and the z-loss are differentiable. Each term is
// an undefined Tensor when the model has no D layer or the term is off.
#pragma once

#include <vector>

#include "dtrn/model/blocks.h"
#include "dtrn/model/config.h"

namespace dtrn::model {

struct RoutingTerms {
  Tensor sparsity;    // S, scalar, or undefined
  Tensor balance;     // Bal, scalar, or undefined
  Tensor lagrangian;  // Lag, scalar, or undefined (no multipliers given)
  Tensor z_loss;      // Z, scalar, or undefined (no layer recorded z_sq)
};

// multipliers: one per layer, or empty (no Lagrangian term).
RoutingTerms routing_terms(const std::vector<RoutingStats>& layers, const RoutingConfig& config,
                           const std::vector<double>& multipliers = {});

}  // namespace dtrn::model
