// DtrnModel::calibrate_routing: pins each D layer's routed fraction for benchmarks (model.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "dtrn/model/model.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::model {
namespace {

// A threshold with about a fraction q of values below it: the midpoint of the two order statistics
// around the q-quantile, so that no token's logit difference sits exactly on it (where rounding
// differences between devices could flip the decision).
double quantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const size_t lo = static_cast<size_t>(std::floor(q * static_cast<double>(values.size() - 1)));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return 0.5 * (values[lo] + values[hi]);
}

}  // namespace

const NamedParameter& DtrnModel::parameter(const std::string& name) const {
  for (const NamedParameter& p : params_) {
    if (p.name == name) return p;
  }
  DTRN_ASSERT(false, "model has no parameter ", name);
  __builtin_unreachable();
}

void DtrnModel::calibrate_routing(const Tensor& ids, double fraction, bool spread) {
  DTRN_CHECK(fraction >= 0 && fraction <= 1, "calibrate_routing: fraction ", fraction, " is not in [0, 1]");
  NoGradGuard no_grad;
  const int64_t b = ids.size(0), t = ids.size(1);
  const BlockContext& ctx = context(b, t);
  Tensor x = embedding(embed_, ids.to(device_));
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    if (layout_[l] == 'T') {
      x = dense_block_forward(config_, blocks_[l], x, &ctx);
      continue;
    }
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
      const RouterWeights& w = blocks_[l].router;
      Tensor z = linear(silu(linear(x.reshape({b * t, x.size(2)}), w.w1, w.b1)), w.w2, w.b2).to(DType::kF32);
      Tensor delta = sub(z.narrow(1, 0, 1), z.narrow(1, 1, 1));
      bias_values[1] = quantile(delta.to_vector(), 1 - fraction);
      bias.copy_(Tensor::from_vector(bias_values, {2}, bias.dtype()));
      sync_compute_weights();
    }
    x = routed_block_forward(config_, blocks_[l], x, FallbackDraw{}, nullptr, &ctx);
  }
}

}  // namespace dtrn::model
