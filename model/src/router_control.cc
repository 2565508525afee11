#include "dtrn/model/router_control.h"

#include "dtrn/runtime/check.h"

namespace dtrn::model {

void update_router_state(const RoutingConfig& config, const std::vector<LayerMeasure>& measured,
                         const MeanAcrossRanks& mean_across_ranks, RouterState* state) {
  const size_t n = measured.size();
  if (state->bias.empty()) state->bias.assign(n, 0.0);
  if (state->multiplier.empty()) state->multiplier.assign(n, 0.0);
  DTRN_CHECK(state->bias.size() == n && state->multiplier.size() == n,
             "update_router_state: state for ", state->bias.size(), " layers, ", n, " measured");
  std::vector<double> values(2 * n);
  for (size_t i = 0; i < n; ++i) {
    values[i] = measured[i].f;
    values[n + i] = measured[i].target_quantile;
  }
  if (mean_across_ranks) mean_across_ranks(&values);
  const double rho = config.target_fraction;
  for (size_t i = 0; i < n; ++i) {
    const double f = values[i], q = values[n + i];
    double& b = state->bias[i];
    if (config.bias_rate > 0) b = (1 - config.bias_rate) * b + config.bias_rate * -q;
    if (config.bias_gamma > 0) b += config.bias_gamma * (f < rho ? 1.0 : (f > rho ? -1.0 : 0.0));
    if (config.balance_multiplier_lr > 0)
      state->multiplier[i] += config.balance_multiplier_lr * (f - rho);
  }
}

}  // namespace dtrn::model
