// Setting routing from the tokens of a batch: DtrnModel::calibrate_routing (benchmarks) and
// DtrnModel::init_router_bias (the threshold bias's start), both from a quantile of the logit
// difference Delta = z_attn - z_bypass over the tokens reaching each D layer (model.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "dtrn/model/model.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/routing.h"

namespace dtrn::model {
namespace {

// Delta's q-quantile over the tokens of x, as routing.h defines it (the midpoint of two order
// statistics).
double delta_quantile(const RouterWeights& w, const Tensor& x, double q) {
  Tensor z = router_logits(w, x);
  std::vector<double> delta = sub(z.narrow(1, 0, 1), z.narrow(1, 1, 1)).to_vector();
  std::sort(delta.begin(), delta.end());
  const auto [lo, hi] = quantile_ranks(static_cast<int64_t>(delta.size()), q);
  return 0.5 * (delta[lo] + delta[hi]);
}

}  // namespace

const NamedParameter& DtrnModel::parameter(const std::string& name) const {
  for (const NamedParameter& p : params_) {
    if (p.name == name) return p;
  }
  DTRN_ASSERT(false, "model has no parameter ", name);
  __builtin_unreachable();
}

void DtrnModel::walk_layers(
    const Tensor& ids,
    const std::function<void(int64_t layer, size_t k, const Tensor& x)>& before) {
  NoGradGuard no_grad;
  const int64_t b = ids.size(0), t = ids.size(1);
  const BlockContext& ctx = context(b, t);
  Tensor x = embed(ids);
  size_t k = 0;
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    if (layout_[l] == 'T') {
      x = dense_block_forward(config_, blocks_[l], x, &ctx, tp_);
      continue;
    }
    before(l, k, x);
    x = routed_block_forward(config_, blocks_[l], x, FallbackDraw{}, nullptr, route_control(k, false),
                             tp_);
    ++k;
  }
}

void DtrnModel::calibrate_routing(const Tensor& ids, double fraction, bool spread) {
  DTRN_CHECK(fraction >= 0 && fraction <= 1, "calibrate_routing: fraction ", fraction,
             " is not in [0, 1]");
  walk_layers(ids, [&](int64_t l, size_t, const Tensor& x) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".router.2.";
    const Tensor& weight = parameter(prefix + "weight").tensor;
    const Tensor& bias = parameter(prefix + "bias").tensor;
    std::vector<double> bias_values = {0.0, 0.0};
    if (fraction >= 1) {
      bias_values[0] = 50;
    } else if (fraction <= 0) {
      bias_values[1] = 50;
    } else if (spread) {
      weight.copy_(scale(weight, 50.0));
    }
    bias.copy_(Tensor::from_vector(bias_values, {2}, bias.dtype()));
    sync_compute_weights();
    if (fraction > 0 && fraction < 1) {
      bias_values[1] = delta_quantile(blocks_[l].router, x, 1 - fraction);
      bias.copy_(Tensor::from_vector(bias_values, {2}, bias.dtype()));
      sync_compute_weights();
    }
  });
}

void DtrnModel::init_router_bias(const Tensor& ids) {
  const size_t n = static_cast<size_t>(routed_layer_count());
  router_.bias.assign(n, 0.0);
  if (router_.multiplier.size() != n) router_.multiplier.assign(n, 0.0);
  router_.initialized = true;  // so that each layer routes with its b_l as soon as it is set
  walk_layers(ids, [&](int64_t l, size_t k, const Tensor& x) {
    router_.bias[k] = -delta_quantile(blocks_[l].router, x, 1 - routing_.target_fraction);
  });
}

}  // namespace dtrn::model
