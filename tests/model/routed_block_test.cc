// The D block against the independent reference (reference_dtrnet.h), forward and every gradient in f64,
// and the spec's invariants: all routed, none routed, causality, and the reproducible fallback.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "dtrn/runtime/autograd.h"
#include "reference_dtrnet.h"
#include "tiny_config.h"

namespace dtrn::model {
namespace {

uint64_t g_stream = 100;
Tensor rnd(const Shape& s, double std) {
  Tensor t = Tensor::normal(s, 0.0, std, 2024, g_stream++, 0, DType::kF64);
  t.set_requires_grad(true);
  return t;
}

BlockWeights random_block(const ModelConfig& c, double router_std = 1.0) {
  const int64_t C = c.d_model, hd = c.n_heads * c.head_dim(), kvd = c.n_kv_heads * c.head_dim();
  BlockWeights w;
  w.norm_in = Tensor::uniform({C}, 0.5, 1.5, 1, g_stream++, 0, DType::kF64).set_requires_grad(true);
  w.norm_post = Tensor::uniform({C}, 0.5, 1.5, 1, g_stream++, 0, DType::kF64).set_requires_grad(true);
  w.attn = {rnd({hd, C}, 0.5), rnd({kvd, C}, 0.5), rnd({kvd, C}, 0.5), rnd({C, hd}, 0.5)};
  w.mlp = {rnd({c.d_ff, C}, 0.4), rnd({c.d_ff, C}, 0.4), rnd({C, c.d_ff}, 0.4)};
  w.router = {rnd({C / 2, C}, router_std), rnd({C / 2}, 0.1), rnd({2, C / 2}, router_std), rnd({2}, 0.1)};
  return w;
}

std::vector<Tensor> leaves(const BlockWeights& w) {
  return {w.norm_in, w.norm_post, w.attn.wq, w.attn.wk, w.attn.wv, w.attn.wo, w.mlp.gate, w.mlp.up,
          w.mlp.down, w.router.w1, w.router.b1, w.router.w2, w.router.b2};
}

// Gradients of sum(f() * weights) with respect to `inputs`.
std::vector<Tensor> grads_of(const std::function<Tensor()>& f, std::vector<Tensor> inputs) {
  for (auto& t : inputs) t.zero_grad();
  Tensor out = f();
  Tensor wts = Tensor::uniform(out.shape(), 0.5, 1.5, 5, 5, 0, DType::kF64);
  sum(mul(out, wts)).backward();
  std::vector<Tensor> g;
  for (auto& t : inputs) g.push_back(t.grad());
  return g;
}

double rel(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::abs(x[i] - y[i]));
    den = std::max(den, std::abs(y[i]));
  }
  return num / den;
}

class RoutedBlockTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(RoutedBlockTest, MatchesTheReferenceForwardAndEveryGradient) {
  const ModelConfig c = tiny_block_config(3, GetParam());
  BlockWeights w = random_block(c);
  Tensor x = rnd({2, 7, c.d_model}, 1.0);
  std::vector<char> routed = reference::route_by_threshold(w.router, x);
  int64_t count = 0;
  for (char r : routed) count += r;
  ASSERT_GT(count, 0) << "the fixture must route some tokens";
  ASSERT_LT(count, 14) << "and bypass some";

  RoutingStats stats;
  Tensor got = routed_block_forward(c, w, x, FallbackDraw{}, &stats);
  Tensor want = reference::routed_block(c, w, x, routed);
  // f64 throughout; the two differ only in summation order: 1e-12 is ~1e4 ulps of headroom.
  EXPECT_LT(rel(got, want), 1e-12);
  EXPECT_EQ(stats.routed, count);
  EXPECT_EQ(stats.tokens, 14);
  EXPECT_FALSE(stats.fallback);
  EXPECT_NEAR(stats.s.item(), mean(reference::p_attn(w.router, x)).item(), 1e-15);

  std::vector<Tensor> inputs = leaves(w);
  inputs.push_back(x);
  auto g_got = grads_of([&] { return routed_block_forward(c, w, x, FallbackDraw{}, nullptr); }, inputs);
  auto g_want = grads_of([&] { return reference::routed_block(c, w, x, routed); }, inputs);
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(g_got[i].defined()) << "input " << i;
    EXPECT_LT(rel(g_got[i], g_want[i]), 1e-11) << "gradient of input " << i;
  }
}

TEST_P(RoutedBlockTest, GradientsMatchFiniteDifferences) {
  // A second, reference-free check of the same gradients: central differences (eps 1e-6) on a few
  // parameters of each kind, the router among them (it learns only through the p_a scaling).
  const ModelConfig c = tiny_block_config(3, GetParam());
  BlockWeights w = random_block(c);
  Tensor x = rnd({2, 5, c.d_model}, 1.0);
  auto loss = [&] {
    Tensor out = routed_block_forward(c, w, x, FallbackDraw{}, nullptr);
    return sum(mul(out, Tensor::uniform(out.shape(), 0.5, 1.5, 5, 5, 0, DType::kF64)));
  };
  for (Tensor* t : {&w.router.w2, &w.router.b1, &w.attn.wq, &w.attn.wv, &w.mlp.down, &x}) t->zero_grad();
  loss().backward();
  NoGradGuard no_grad;
  for (Tensor* t : {&w.router.w2, &w.router.b1, &w.attn.wq, &w.attn.wv, &w.mlp.down, &x}) {
    std::vector<double> analytic = t->grad().to_vector();
    double* p = t->data<double>();
    for (int64_t j = 0; j < t->numel(); j += 3) {
      const double saved = p[j];
      p[j] = saved + 1e-6;
      const double up = loss().item();
      p[j] = saved - 1e-6;
      const double down = loss().item();
      p[j] = saved;
      const double numeric = (up - down) / 2e-6;
      ASSERT_NEAR(analytic[j], numeric, 1e-6 * (1 + std::abs(numeric))) << t->describe() << " [" << j << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(KvHeads, RoutedBlockTest, ::testing::Values(1, 2),
                         [](const auto& info) { return info.param == 1 ? "GroupedQuery" : "MultiHead"; });

// With the MLP's down projection zero, out - x is exactly the attention/bypass mixture y.
TEST(RoutedBlock, AllRoutedEqualsDenseAttentionScaledByPAttn) {
  const ModelConfig c = tiny_block_config(3, 1);
  BlockWeights w = random_block(c);
  w.mlp.down = Tensor::zeros(w.mlp.down.shape(), DType::kF64);
  w.router.b2 = Tensor::from_vector({20.0, -20.0}, {2}, DType::kF64);  // every p_a > 0.5
  Tensor x = rnd({2, 6, c.d_model}, 1.0);
  RoutingStats stats;
  Tensor y_d = sub(routed_block_forward(c, w, x, FallbackDraw{}, &stats), x);
  EXPECT_EQ(stats.routed, 12);
  Tensor y_t = sub(dense_block_forward(c, w, x), x);  // the T block's attention output
  Tensor pa = reference::p_attn(w.router, x);
  EXPECT_LT(rel(y_d, mul(y_t, pa)), 1e-12);
}

TEST(RoutedBlock, NoneRoutedEqualsTheBypassScaledByPBypass) {
  const ModelConfig c = tiny_block_config(3, 1);
  BlockWeights w = random_block(c);
  w.mlp.down = Tensor::zeros(w.mlp.down.shape(), DType::kF64);
  w.router.b2 = Tensor::from_vector({-20.0, 20.0}, {2}, DType::kF64);
  Tensor x = rnd({2, 6, c.d_model}, 1.0);
  RoutingStats stats;
  Tensor y_d = sub(routed_block_forward(c, w, x, FallbackDraw{}, &stats), x);  // inference: no fallback
  EXPECT_EQ(stats.routed, 0);
  EXPECT_FALSE(stats.fallback);
  Tensor pb = add_scalar(scale(reference::p_attn(w.router, x), -1.0), 1.0);
  Tensor c_ref = reference::bypass(c, w.attn, rmsnorm(x, w.norm_in, c.norm_eps));
  EXPECT_LT(rel(y_d, mul(c_ref, pb)), 1e-12);
}

TEST(RoutedBlock, ChangingTokenJNeverChangesEarlierOutputsOrOtherSequences) {
  const ModelConfig c = tiny_block_config(3, 1);
  BlockWeights w = random_block(c);
  NoGradGuard no_grad;
  Tensor x = rnd({2, 8, c.d_model}, 1.0).detach();
  Tensor base = routed_block_forward(c, w, x, FallbackDraw{}, nullptr);
  for (int64_t j : {0, 3, 7}) {
    Tensor x2 = x.clone();
    x2.narrow(0, 0, 1).narrow(1, j, 1).fill_(3.0);
    Tensor out = routed_block_forward(c, w, x2, FallbackDraw{}, nullptr);
    // Unchanged up to rounding: a different routed count repacks the gathered rows, which may change
    // BLAS blocking; a causality leak would change values at O(1).
    if (j > 0) {
      EXPECT_LT(rel(out.narrow(0, 0, 1).narrow(1, 0, j), base.narrow(0, 0, 1).narrow(1, 0, j)), 1e-13)
          << "j = " << j;
    }
    EXPECT_LT(rel(out.narrow(0, 1, 1), base.narrow(0, 1, 1)), 1e-13);
    EXPECT_NE(out.narrow(0, 0, 1).narrow(1, j, 1).contiguous().to_vector(),
              base.narrow(0, 0, 1).narrow(1, j, 1).contiguous().to_vector());
  }
}

TEST(RoutedBlock, StarvationFallbackIsReproducibleAndMatchesTheReferenceOnItsSet) {
  const ModelConfig c = tiny_block_config(3, 1);
  BlockWeights w = random_block(c);
  w.router.b2 = Tensor::from_vector({-20.0, 20.0}, {2}, DType::kF64);
  Tensor x = rnd({2, 10, c.d_model}, 1.0);
  FallbackDraw draw{true, 77, 3, 1ull << 32, 0.15};
  RoutingStats s1, s2, s3;
  Tensor a = routed_block_forward(c, w, x, draw, &s1);
  Tensor b = routed_block_forward(c, w, x, draw, &s2);
  EXPECT_TRUE(s1.fallback);
  EXPECT_EQ(s1.routed, 3);  // 15% of 20 tokens
  EXPECT_EQ(a.to_vector(), b.to_vector());  // same (seed, stream, offset): same tokens, same output
  draw.offset = 2ull << 32;
  Tensor d = routed_block_forward(c, w, x, draw, &s3);
  EXPECT_EQ(s3.routed, 3);
  EXPECT_NE(a.to_vector(), d.to_vector());  // another micro-batch draws another set

  // Recover the fallback set from the output: a routed token's y differs from the bypass. Then the
  // reference with that mask must agree exactly with dtrn's output.
  std::vector<char> routed(20, 0);
  {
    NoGradGuard no_grad;
    BlockWeights wz = w;
    wz.mlp.down = Tensor::zeros(w.mlp.down.shape(), DType::kF64);
    Tensor y = sub(routed_block_forward(c, wz, x, FallbackDraw{true, 77, 3, 1ull << 32, 0.15}, nullptr), x);
    Tensor pb = add_scalar(scale(reference::p_attn(w.router, x), -1.0), 1.0);
    std::vector<double> yb = mul(reference::bypass(c, w.attn, rmsnorm(x, w.norm_in, c.norm_eps)), pb).to_vector();
    std::vector<double> yv = y.to_vector();
    for (int64_t i = 0; i < 20; ++i)
      for (int64_t k = 0; k < c.d_model; ++k) routed[i] |= std::abs(yv[i * 8 + k] - yb[i * 8 + k]) > 1e-12;
  }
  int64_t n = 0;
  for (char r : routed) n += r;
  ASSERT_EQ(n, 3);
  EXPECT_LT(rel(a, reference::routed_block(c, w, x, routed)), 1e-12);
}

}  // namespace
}  // namespace dtrn::model
