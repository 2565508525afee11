// The routing controls' state outside the optimiser (docs/routing-loss.md): per D layer, the
// threshold bias b_l (route iff Delta + b_l > 0) and the Lagrangian multiplier mu_l, and their
// once-per-step update from what the step measured. The state is part of the model's routing:
// evaluation and inference read it frozen; checkpoints save it and a resume restores it exactly.
//
// Update, per D layer, after each optimiser step (rho = routing.target_fraction):
//   q_l  = Delta's (1 - rho)-quantile this step (mean over micro-batches), so -q_l routes a
//   fraction rho b_l <- (1 - bias_rate) b_l + bias_rate (-q_l)          the EMA (when bias_rate >
//   0) b_l <- b_l + bias_gamma sign(rho - f_l)               the sign trim (when bias_gamma > 0)
//   mu_l <- mu_l + balance_multiplier_lr (f_l - rho)      gradient ascent (when the rate > 0)
// b_l starts at -q_l of the first batch (DtrnModel::init_router_bias), not at 0.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "dtrn/model/config.h"

namespace dtrn::model {

struct RouterState {
  bool initialized = false;        // b_l set from a first batch
  std::vector<double> bias;        // b_l, one per D layer in layer order
  std::vector<double> multiplier;  // mu_l, one per D layer
};

// What one step measured of one D layer (the mean over its micro-batches).
struct LayerMeasure {
  double f = 0;                // routed fraction
  double target_quantile = 0;  // q_l: Delta at 1 - rho
};

// Note [Routing state across data-parallel ranks]: every rank must hold the same b_l and mu_l, or
// the ranks would route differently and their replicas drift apart. The update therefore reads only
// values all ranks agree on: before updating, it hands the flattened measures (f_l for every layer,
// then q_l for every layer) to `mean_across_ranks`, which must replace them in place with their
// mean over the data-parallel group (an all-reduce sum divided by the group size). Single-process
// runs pass nullptr. The mean of per-rank quantiles approximates the global quantile; the EMA
// smooths the rest.
using MeanAcrossRanks = std::function<void(std::vector<double>* values)>;

// Applies one step's update to `state` (sized to measured.size() if empty).
void update_router_state(const RoutingConfig& config, const std::vector<LayerMeasure>& measured,
                         const MeanAcrossRanks& mean_across_ranks, RouterState* state);

}  // namespace dtrn::model
