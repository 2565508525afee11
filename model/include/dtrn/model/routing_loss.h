// The routing terms of the DTRNet loss (spec, "Loss"), over the D layers of one micro-batch:
//   S   = (sum_l f_l s_l) / (sum_l f_l)       the reference's sparsity term; undefined when sum f = 0
//   Bal = (1/|D|) sum_l (s_l - rho)^2         dtrn's load-balancing term
// f_l is a number (no gradient), s_l = mean p_a is differentiable. Both are undefined Tensors when the
// model has no D layer.
#pragma once

#include <vector>

#include "dtrn/model/blocks.h"

namespace dtrn::model {

struct RoutingTerms {
  Tensor sparsity;  // S, scalar f32, or undefined
  Tensor balance;   // Bal, scalar f32, or undefined
};

RoutingTerms routing_terms(const std::vector<RoutingStats>& layers, double target_fraction);

}  // namespace dtrn::model
