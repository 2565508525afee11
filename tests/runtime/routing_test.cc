// Token routing (routing.h) against a straightforward host computation of the spec's rules 3 and 4 and
// of the band fallback, and the sort and quantiles the routing controls read, on the CPU; on a GPU, the
// CUDA kernels against the CPU (the same lists, the same fallback tokens, the same order).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/rng.h"
#include "dtrn/runtime/routing.h"

namespace dtrn {
namespace {

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no GPU"

// p values around the threshold, with rows routing none, one, some and all of their tokens.
std::vector<double> mixed_p(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<double> p(rows * cols);
  RngStream rng(seed, 1);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      double v = rng.next_uniform();
      if (r == 0) v = 0.2;                      // nothing routed
      if (r == 1) v = j == cols / 2 ? 0.9 : 0.1;  // exactly one
      if (r == 2) v = 0.8;                      // everything
      if (j % 7 == 3) v = 0.5;                  // exactly on the threshold: not routed (strict >)
      p[r * cols + j] = v;
    }
  }
  return p;
}

struct Expected {
  std::vector<int64_t> routed, positions, bypass, cu;
};

Expected expected_lists(const std::vector<char>& mask, int64_t rows, int64_t cols) {
  Expected e;
  for (int64_t r = 0; r < rows; ++r) {
    e.cu.push_back(static_cast<int64_t>(e.routed.size()));
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t i = r * cols + j;
      if (mask[i]) {
        e.routed.push_back(i);
        e.positions.push_back(j);
      } else {
        e.bypass.push_back(i);
      }
    }
  }
  e.cu.push_back(static_cast<int64_t>(e.routed.size()));
  return e;
}

void expect_lists(const TokenRouting& got, const Expected& want) {
  EXPECT_EQ(got.count, static_cast<int64_t>(want.routed.size()));
  EXPECT_EQ(got.routed.to_ints(), want.routed);
  EXPECT_EQ(got.positions.to_ints(), want.positions);
  EXPECT_EQ(got.bypass.to_ints(), want.bypass);
  EXPECT_EQ(got.cu_seqlens.to_ints(), want.cu);
}

TEST(Routing, ThresholdListsFollowTheMask) {
  const int64_t rows = 5, cols = 37;
  const std::vector<double> p = mixed_p(rows, cols, 3);
  std::vector<char> mask(p.size());
  for (size_t i = 0; i < p.size(); ++i) mask[i] = p[i] > 0.5;
  const TokenRouting r = route_tokens(Tensor::from_vector(p, {rows * cols}), 0.5, rows, cols, FallbackDraw{true, 1, 2, 0, 0.15});
  EXPECT_FALSE(r.fallback);
  expect_lists(r, expected_lists(mask, rows, cols));
}

TEST(Routing, FallbackRoutesASeededPartialShuffle) {
  const int64_t rows = 3, cols = 20, n = rows * cols;
  std::vector<double> p(n, 0.3);
  const FallbackDraw draw{true, 77, 5, 1ull << 32, 0.15};
  const TokenRouting r = route_tokens(Tensor::from_vector(p, {n}), 0.5, rows, cols, draw);
  EXPECT_TRUE(r.fallback);
  // The spec's draw, written out: a partial Fisher-Yates shuffle of 0..N-1 with RngStream draws.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  RngStream rng(draw.seed, draw.stream, draw.offset);
  std::vector<char> mask(n, 0);
  for (int64_t i = 0; i < 9; ++i) {  // round(0.15 * 60) = 9
    std::swap(order[i], order[i + static_cast<int64_t>(rng.next_below(n - i))]);
    mask[order[i]] = 1;
  }
  expect_lists(r, expected_lists(mask, rows, cols));
  // Disabled (evaluation): nothing routed.
  const TokenRouting e = route_tokens(Tensor::from_vector(p, {n}), 0.5, rows, cols, FallbackDraw{});
  EXPECT_FALSE(e.fallback);
  EXPECT_EQ(e.count, 0);
  EXPECT_EQ(e.bypass.numel(), n);
}

TEST(Routing, ScatterRowsInvertsTheGatherAndItsGradientGathers) {
  Tensor x = Tensor::uniform({6, 3}, -1, 1, 4, 1, 0, DType::kF64).set_requires_grad(true);
  Tensor ia = Tensor::from_ints({4, 0, 2}, {3}, DType::kI32), ib = Tensor::from_ints({1, 3, 5}, {3}, DType::kI32);
  Tensor y = scatter_rows({index_select(x, 0, ia), index_select(x, 0, ib)}, {ia, ib}, 6);
  EXPECT_EQ(y.to_vector(), x.to_vector());
  Tensor w = Tensor::uniform({6, 3}, -1, 1, 5, 1, 0, DType::kF64);
  sum(mul(y, w)).backward();
  EXPECT_EQ(x.grad().to_vector(), w.to_vector());
}

// Distinct values in a shuffled order, with a tie and both zeros: the sort is stable and takes the zeros
// as equal.
std::vector<double> shuffled_values(int64_t n, uint64_t seed) {
  std::vector<double> v(n);
  RngStream rng(seed, 4);
  for (int64_t i = 0; i < n; ++i) v[i] = rng.next_uniform() * 8 - 4;
  if (n >= 6) {
    v[1] = v[4] = 0.75;
    v[2] = 0.0;
    v[5] = -0.0;
  }
  return v;
}

TEST(SortValues, StableAscendingOrderAndQuantilesAtTheMidpointOfTwoRanks) {
  const std::vector<double> v = shuffled_values(101, 3);
  const auto [sorted, order] = sort_values(Tensor::from_vector(v, {101}));
  std::vector<int64_t> want(101);
  std::iota(want.begin(), want.end(), 0);
  std::stable_sort(want.begin(), want.end(), [&](int64_t a, int64_t b) {
    const float x = static_cast<float>(v[a]), y = static_cast<float>(v[b]);
    return x < y;
  });
  EXPECT_EQ(order.to_ints(), want);
  const std::vector<double> s = sorted.to_vector();
  for (int64_t i = 0; i < 101; ++i) ASSERT_EQ(s[i], static_cast<float>(v[want[i]]));
  // Ties keep index order, the two zeros too: +0.0 (index 2) before -0.0 (index 5).
  const auto pos = [&](int64_t i) { return std::find(want.begin(), want.end(), i) - want.begin(); };
  EXPECT_LT(pos(1), pos(4));
  EXPECT_LT(pos(2), pos(5));

  // n = 101, q = 0.9: ranks floor(0.9 * 100) = 90 and 91; q = 1: the last rank twice.
  using Ranks = std::pair<int64_t, int64_t>;
  EXPECT_EQ(quantile_ranks(101, 0.9), Ranks(90, 91));
  EXPECT_EQ(quantile_ranks(101, 1.0), Ranks(100, 100));
  EXPECT_EQ(quantile_ranks(1, 0.5), Ranks(0, 0));
  const std::vector<double> q = sorted_quantiles(sorted, {0.9, 0.0}).to_vector();
  EXPECT_FLOAT_EQ(q[0], 0.5f * (s[90] + s[91]));
  EXPECT_FLOAT_EQ(q[1], 0.5f * (s[0] + s[1]));
}

TEST(BandFallback, RoutesTheTopFractionByScoreWhenTheThresholdLeavesTheBand) {
  const int64_t rows = 4, cols = 25, n = rows * cols;
  const std::vector<double> v = shuffled_values(n, 9);
  const BandFallback band{true, 0.02, 0.3, 0.1};
  auto top = [&](const std::vector<double>& score, int64_t k) {
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score[a] < score[b]; });
    std::vector<int64_t> t(idx.end() - k, idx.end());
    std::sort(t.begin(), t.end());
    return t;
  };
  // Threshold 3.99 routes about 0.1%: below the band, the top 10 by score are routed instead.
  const TokenRouting low = route_tokens(Tensor::from_vector(v, {n}), 3.99, rows, cols, FallbackDraw{}, band);
  EXPECT_TRUE(low.fallback);
  EXPECT_LT(low.threshold_count, 2);
  EXPECT_EQ(low.count, 10);
  EXPECT_EQ(low.routed.to_ints(), top(v, 10));
  // Threshold -4 routes everything: above the band, the same top 10.
  const TokenRouting high = route_tokens(Tensor::from_vector(v, {n}), -4.5, rows, cols, FallbackDraw{}, band);
  EXPECT_TRUE(high.fallback);
  EXPECT_EQ(high.threshold_count, n);
  EXPECT_EQ(high.routed.to_ints(), top(v, 10));
  // Threshold 2.4 routes about 20%: inside the band, the threshold's choice stands.
  const TokenRouting inside = route_tokens(Tensor::from_vector(v, {n}), 2.4, rows, cols, FallbackDraw{}, band);
  EXPECT_FALSE(inside.fallback);
  EXPECT_EQ(inside.count, inside.threshold_count);
  int64_t above = 0;
  for (double x : v) above += static_cast<float>(x) > 2.4f;
  EXPECT_EQ(inside.count, above);
  // Positions and row boundaries of the band's choice are those of its mask.
  std::vector<char> mask(n, 0);
  for (int64_t i : top(v, 10)) mask[i] = 1;
  const Expected e = expected_lists(mask, rows, cols);
  EXPECT_EQ(low.positions.to_ints(), e.positions);
  EXPECT_EQ(low.cu_seqlens.to_ints(), e.cu);
  EXPECT_EQ(low.bypass.to_ints(), e.bypass);
}

TEST(CudaRouting, SortQuantilesAndBandFallbackMatchTheCpu) {
  REQUIRE_GPU();
  for (int64_t n : {1, 6, 1000, 65536}) {
    const std::vector<double> v = shuffled_values(n, static_cast<uint64_t>(n));
    const auto [cs, co] = sort_values(Tensor::from_vector(v, {n}));
    const auto [gs, go] = sort_values(Tensor::from_vector(v, {n}).to(Device::cuda()));
    EXPECT_EQ(go.to_ints(), co.to_ints());
    EXPECT_EQ(gs.to_vector(), cs.to_vector());
    EXPECT_EQ(sorted_quantiles(gs, {0.1, 0.5, 0.9}).to_vector(), sorted_quantiles(cs, {0.1, 0.5, 0.9}).to_vector());
  }
  const int64_t rows = 8, cols = 1024, n = rows * cols;
  const std::vector<double> v = shuffled_values(n, 5);
  const BandFallback band{true, 0.02, 0.3, 0.1};
  for (double threshold : {3.99, -4.5, 2.4}) {
    const TokenRouting c = route_tokens(Tensor::from_vector(v, {n}), threshold, rows, cols, FallbackDraw{}, band);
    const TokenRouting g = route_tokens(Tensor::from_vector(v, {n}).to(Device::cuda()), threshold, rows, cols, FallbackDraw{}, band);
    EXPECT_EQ(g.fallback, c.fallback);
    EXPECT_EQ(g.threshold_count, c.threshold_count);
    EXPECT_EQ(g.routed.to_ints(), c.routed.to_ints());
    EXPECT_EQ(g.cu_seqlens.to_ints(), c.cu_seqlens.to_ints());
  }
}

TEST(CudaRouting, ListsAndFallbackMatchTheCpu) {
  REQUIRE_GPU();
  // Up to 32768 tokens the device compacts from a copy of the mask in shared memory; 5 x 8192 does not.
  for (const auto& [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{5, 37}, {8, 2048}, {1, 1}, {2, 8192}, {5, 8192}}) {
    const std::vector<double> p = mixed_p(rows, cols, static_cast<uint64_t>(rows * cols));
    const FallbackDraw draw{true, 11, 3, 7ull << 32, 0.15};
    const TokenRouting cpu = route_tokens(Tensor::from_vector(p, {rows * cols}), 0.5, rows, cols, draw);
    const TokenRouting gpu = route_tokens(Tensor::from_vector(p, {rows * cols}).to(Device::cuda()), 0.5, rows, cols, draw);
    EXPECT_EQ(gpu.routed.device(), Device::cuda());
    EXPECT_EQ(gpu.fallback, cpu.fallback);
    EXPECT_EQ(gpu.count, cpu.count);
    EXPECT_EQ(gpu.routed.to_ints(), cpu.routed.to_ints());
    EXPECT_EQ(gpu.positions.to_ints(), cpu.positions.to_ints());
    EXPECT_EQ(gpu.bypass.to_ints(), cpu.bypass.to_ints());
    EXPECT_EQ(gpu.cu_seqlens.to_ints(), cpu.cu_seqlens.to_ints());
    // All below the threshold: the device's fallback picks the CPU's tokens.
    const std::vector<double> low(rows * cols, 0.25);
    const TokenRouting fc = route_tokens(Tensor::from_vector(low, {rows * cols}), 0.5, rows, cols, draw);
    const TokenRouting fg = route_tokens(Tensor::from_vector(low, {rows * cols}).to(Device::cuda()), 0.5, rows, cols, draw);
    EXPECT_TRUE(fg.fallback);
    EXPECT_EQ(fg.routed.to_ints(), fc.routed.to_ints());
    EXPECT_EQ(fg.cu_seqlens.to_ints(), fc.cu_seqlens.to_ints());
  }
}

TEST(CudaRouting, ScatterRowsAndAccumulationMatchTheCpu) {
  REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Tensor a = Tensor::uniform({5, 7}, -1, 1, 1, 1, 0, DType::kF32).to(dt);
    Tensor b = Tensor::uniform({3, 7}, -1, 1, 2, 1, 0, DType::kF32).to(dt);
    Tensor ia = Tensor::from_ints({7, 0, 2, 5, 3}, {5}, DType::kI32), ib = Tensor::from_ints({1, 6, 4}, {3}, DType::kI32);
    const Device g = Device::cuda();
    Tensor cpu = scatter_rows({a.to(DType::kF32), b.to(DType::kF32)}, {ia, ib}, 8);
    Tensor gpu = scatter_rows({a.to(g), b.to(g)}, {ia.to(g), ib.to(g)}, 8);
    EXPECT_EQ(gpu.to(DType::kF32).to_vector(), cpu.to_vector());
  }
  // A bf16 leaf accumulates its gradient in f32 over two backwards.
  Tensor w = Tensor::uniform({4, 5}, -1, 1, 3, 1, 0, DType::kF32).to(DType::kBF16).to(Device::cuda());
  w.set_requires_grad(true);
  Tensor up = Tensor::uniform({4, 5}, -1, 1, 4, 1, 0, DType::kF32);
  Tensor up_bf = up.to(DType::kBF16);
  for (int i = 0; i < 2; ++i) sum(mul(w, up_bf.to(Device::cuda()))).backward();
  ASSERT_EQ(w.grad().dtype(), DType::kF32);
  const std::vector<double> got = w.grad().to_vector(), want = up_bf.to_vector();
  for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k], 2 * want[k]);
}

}  // namespace
}  // namespace dtrn
