// The routing controls (router_control.h, routing_loss.h, RouteControl in blocks.h) against hand
// computations: the state update, every loss term and its gradient, the biased block against the
// spec's block with a shifted router bias, the measured quantiles and the first-batch start.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dtrn/model/model.h"
#include "dtrn/model/router_control.h"
#include "dtrn/model/routing_loss.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/routing.h"
#include "reference_dtrnet.h"
#include "tiny_config.h"

namespace dtrn::model {
namespace {

// f64 arithmetic on a handful of values: only rounding differs from the hand computation.
constexpr double kTol = 1e-12;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(RouterControl, UpdateIsTheEmaThenTheSignTrimAndTheMultiplierAscent) {
  RoutingConfig r;
  r.target_fraction = 0.1;
  r.bias_rate = 0.25;
  r.bias_gamma = 0.01;
  r.balance_multiplier_lr = 0.5;
  RouterState s{true, {1.0, -2.0}, {0.0, 0.1}};
  update_router_state(r, {{0.05, 0.4}, {0.3, -1.0}}, nullptr, &s);
  // b0 = 0.75 * 1 + 0.25 * -0.4 + 0.01 (f below rho);  b1 = 0.75 * -2 + 0.25 * 1 - 0.01 (f above
  // rho)
  EXPECT_NEAR(s.bias[0], 0.66, kTol);
  EXPECT_NEAR(s.bias[1], -1.26, kTol);
  // mu0 = 0 + 0.5 * (0.05 - 0.1);  mu1 = 0.1 + 0.5 * (0.3 - 0.1)
  EXPECT_NEAR(s.multiplier[0], -0.025, kTol);
  EXPECT_NEAR(s.multiplier[1], 0.2, kTol);
  // f exactly at rho: no trim. Rates 0: nothing moves.
  RouterState t{true, {0.5}, {0.0}};
  update_router_state(r, {{0.1, -0.5}}, nullptr, &t);
  EXPECT_NEAR(t.bias[0], 0.75 * 0.5 + 0.25 * 0.5, kTol);
  RoutingConfig off;
  RouterState u{true, {0.5}, {0.3}};
  update_router_state(off, {{0.9, 7.0}}, nullptr, &u);
  EXPECT_EQ(u.bias[0], 0.5);
  EXPECT_EQ(u.multiplier[0], 0.3);
}

TEST(RouterControl, RanksThatMeasureDifferentlyHoldIdenticalStatesThroughTheMean) {
  RoutingConfig r;
  r.bias_rate = 0.1;
  r.bias_gamma = 1e-3;
  r.balance_multiplier_lr = 0.2;
  // Two ranks' measures; the hook stands in for an all-reduce mean over them.
  const std::vector<LayerMeasure> rank0 = {{0.02, 0.3}, {0.2, -0.7}},
                                  rank1 = {{0.12, 0.1}, {0.4, -0.1}};
  auto flat = [](const std::vector<LayerMeasure>& m) {
    return std::vector<double>{m[0].f, m[1].f, m[0].target_quantile, m[1].target_quantile};
  };
  const std::vector<double> a = flat(rank0), b = flat(rank1);
  int calls = 0;
  const MeanAcrossRanks mean = [&](std::vector<double>* v) {
    ++calls;
    ASSERT_EQ(v->size(), 4u);
    for (size_t i = 0; i < 4; ++i) (*v)[i] = 0.5 * (a[i] + b[i]);
  };
  RouterState s0{true, {0.4, -0.2}, {0.0, 0.0}}, s1 = s0, want = s0;
  update_router_state(r, rank0, mean, &s0);
  update_router_state(r, rank1, mean, &s1);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(s0.bias, s1.bias);
  EXPECT_EQ(s0.multiplier, s1.multiplier);
  update_router_state(r, {{0.07, 0.2}, {0.3, -0.4}}, nullptr, &want);  // the mean measures by hand
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NEAR(s0.bias[i], want.bias[i], kTol);
    EXPECT_NEAR(s0.multiplier[i], want.multiplier[i], kTol);
  }
}

Tensor leaf(double v) { return Tensor::full({}, v, DType::kF64).set_requires_grad(true); }

TEST(RoutingTerms, EachTermAndItsGradientMatchTheHandComputation) {
  RoutingConfig r;
  r.target_fraction = 0.1;
  r.balance_on = "soft_fraction";
  std::vector<RoutingStats> layers(2);
  layers[0].s = leaf(0.3);
  layers[0].soft = leaf(0.04);
  layers[0].z_sq = leaf(2.0);
  layers[0].routed = 25;
  layers[0].tokens = 100;
  layers[1].s = leaf(0.6);
  layers[1].soft = leaf(0.5);
  layers[1].z_sq = leaf(5.0);
  layers[1].routed = 75;
  layers[1].tokens = 100;
  const RoutingTerms t = routing_terms(layers, r, {0.5, -1.0});
  EXPECT_NEAR(t.sparsity.item(), (0.25 * 0.3 + 0.75 * 0.6) / 1.0, kTol);
  EXPECT_NEAR(t.balance.item(), (0.06 * 0.06 + 0.4 * 0.4) / 2, kTol);
  EXPECT_NEAR(t.lagrangian.item(), (0.5 * -0.06 + -1.0 * 0.4) / 2, kTol);
  EXPECT_NEAR(t.z_loss.item(), 3.5, kTol);
  add(add(t.balance, t.lagrangian), t.z_loss).backward();
  // d/dm0 = (m0 - rho) + mu0 / 2;  d/dm1 = (m1 - rho) + mu1 / 2;  d/dz = 1/2 each; s takes none
  // here.
  EXPECT_NEAR(layers[0].soft.grad().item(), -0.06 + 0.25, kTol);
  EXPECT_NEAR(layers[1].soft.grad().item(), 0.4 - 0.5, kTol);
  EXPECT_NEAR(layers[0].z_sq.grad().item(), 0.5, kTol);
  EXPECT_FALSE(layers[0].s.grad().defined());

  // The spec's statistic: Bal on s, no Lagrangian without multipliers, no z-loss without z_sq.
  RoutingConfig spec;
  std::vector<RoutingStats> plain(1);
  plain[0].s = leaf(0.3);
  plain[0].routed = 10;
  plain[0].tokens = 100;
  const RoutingTerms p = routing_terms(plain, spec);
  EXPECT_NEAR(p.balance.item(), 0.2 * 0.2, kTol);
  EXPECT_FALSE(p.lagrangian.defined());
  EXPECT_FALSE(p.z_loss.defined());
}

BlockWeights random_block(const ModelConfig& c) {
  uint64_t stream = 300;
  auto rnd = [&](const Shape& s, double std) {
    return Tensor::normal(s, 0.0, std, 77, stream++, 0, DType::kF64);
  };
  const int64_t C = c.d_model, hd = c.n_heads * c.head_dim(), kvd = c.n_kv_heads * c.head_dim();
  BlockWeights w;
  w.norm_in = Tensor::full({C}, 1.0, DType::kF64);
  w.norm_post = Tensor::full({C}, 1.0, DType::kF64);
  w.attn = {rnd({hd, C}, 0.5), rnd({kvd, C}, 0.5), rnd({kvd, C}, 0.5), rnd({C, hd}, 0.5)};
  w.mlp = {rnd({c.d_ff, C}, 0.4), rnd({c.d_ff, C}, 0.4), rnd({C, c.d_ff}, 0.4)};
  w.router = {rnd({C / 2, C}, 1.0), rnd({C / 2}, 0.1), rnd({2, C / 2}, 1.0), rnd({2}, 0.1)};
  return w;
}

std::vector<double> deltas(const BlockWeights& w, const Tensor& x) {
  const std::vector<double> z = router_logits(w.router, x).to_vector();
  std::vector<double> d;
  for (size_t i = 0; i < z.size(); i += 2) d.push_back(z[i] - z[i + 1]);
  return d;
}

TEST(BiasedRouting, IsTheSpecBlockWithTheRouterBiasShiftedAndRecordsEveryStatistic) {
  const ModelConfig c = tiny_block_config(3);
  BlockWeights w = random_block(c);
  Tensor x = Tensor::normal({2, 9, c.d_model}, 0.0, 1.0, 5, 6, 0, DType::kF64);
  std::vector<double> d = deltas(w, x);
  std::vector<double> sorted = d;
  std::sort(sorted.begin(), sorted.end());
  // A bias that routes the top 5 of 18 tokens, whatever the spec's threshold would have done.
  const double bias = -0.5 * (sorted[12] + sorted[13]);
  RouteControl control;
  control.use_bias = true;
  control.bias = bias;
  control.measure = true;
  control.target_fraction = 0.25;
  control.soft_tau = 0.7;
  control.z_loss = true;
  RoutingStats st;
  Tensor got = routed_block_forward(c, w, x, FallbackDraw{}, &st, control);
  EXPECT_EQ(st.routed, 5);
  EXPECT_EQ(st.threshold_routed, 5);

  // Paths scaled by sigmoid(Delta + b): exactly the spec's block whose router adds (b, 0) to its
  // logits.
  BlockWeights shifted = w;
  const std::vector<double> b2 = w.router.b2.to_vector();
  shifted.router.b2 = Tensor::from_vector({b2[0] + bias, b2[1]}, {2}, DType::kF64);
  Tensor want =
      reference::routed_block(c, shifted, x, reference::route_by_threshold(shifted.router, x));
  const std::vector<double> g = got.to_vector(), e = want.to_vector();
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], e[i], 1e-10) << "element " << i;

  double soft = 0, z_sq = 0, s = 0;
  const std::vector<double> z = router_logits(w.router, x).to_vector();
  for (size_t i = 0; i < d.size(); ++i) {
    soft += sigmoid((d[i] + bias) / 0.7) / 18;
    const double m = std::max(z[2 * i], z[2 * i + 1]);
    const double lse = m + std::log(std::exp(z[2 * i] - m) + std::exp(z[2 * i + 1] - m));
    z_sq += lse * lse / 18;
    s += sigmoid(d[i]) / 18;
  }
  EXPECT_NEAR(st.soft.item(), soft, kTol);
  EXPECT_NEAR(st.z_sq.item(), z_sq, 1e-10);
  EXPECT_NEAR(st.s.item(), s, kTol);  // s stays the unbiased mean p_a (the spec's statistic)
  // Measured: Delta (as f32) at 0.1, 0.5, 0.9 and 1 - rho, each the midpoint of its two ranks.
  std::vector<float> f32(d.begin(), d.end());
  std::sort(f32.begin(), f32.end());
  const std::vector<double> q = st.quantiles.to_vector();
  const std::vector<double> levels = measured_quantile_levels(0.25);
  ASSERT_EQ(q.size(), levels.size());
  for (size_t i = 0; i < levels.size(); ++i) {
    const auto [lo, hi] = quantile_ranks(18, levels[i]);
    EXPECT_FLOAT_EQ(q[i], 0.5f * (f32[lo] + f32[hi])) << "level " << levels[i];
  }

  // Unbiased path scaling: the same routing, paths scaled by the router's own p_a.
  control.bias_scales_path = false;
  Tensor unbiased = routed_block_forward(c, w, x, FallbackDraw{}, nullptr, control);
  Tensor want_u =
      reference::routed_block(c, w, x, reference::route_by_threshold(shifted.router, x));
  const std::vector<double> gu = unbiased.to_vector(), eu = want_u.to_vector();
  for (size_t i = 0; i < gu.size(); ++i) ASSERT_NEAR(gu[i], eu[i], 1e-10) << "element " << i;
}

TEST(BiasedRouting, TheFirstBatchSetsEachLayersBiasToRouteTheTargetFraction) {
  ModelConfig c = tiny_block_config(3);
  c.n_layers = 5;
  c.layout = "TDTDT";
  RoutingConfig r;
  r.target_fraction = 0.1;
  r.bias_rate = 0.1;
  DtrnModel m(c, r, Device::cpu(), DType::kF64);
  m.init(3);
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < 2 * 16; ++i) tokens.push_back((i * 7 + 3) % 50);
  Tensor ids = Tensor::from_ints(tokens, {2, 16}, DType::kI32);
  EXPECT_FALSE(m.router_state().initialized);
  m.init_router_bias(ids);
  ASSERT_TRUE(m.router_state().initialized);
  ASSERT_EQ(m.router_state().bias.size(), 2u);
  // Over 32 tokens the 0.9-quantile sits between ranks 27 and 28: 4 tokens lie above it, in each
  // layer.
  ForwardOptions eval;
  ForwardResult res = m.forward(ids, ids, eval);
  ASSERT_EQ(res.layers.size(), 2u);
  for (const LayerRouting& l : res.layers) EXPECT_DOUBLE_EQ(l.f, 4.0 / 32.0) << "layer " << l.layer;
}

}  // namespace
}  // namespace dtrn::model
