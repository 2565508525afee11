// Token routing (routing.h) against a straightforward host computation of the spec's rules 3 and 4, on
// the CPU; on a GPU, the CUDA kernels against the CPU (the same lists, and the same fallback tokens).
#include <gtest/gtest.h>

#include <algorithm>
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
  const TokenRouting r = route_tokens(Tensor::from_vector(p, {rows * cols}), rows, cols, FallbackDraw{true, 1, 2, 0, 0.15});
  EXPECT_FALSE(r.fallback);
  expect_lists(r, expected_lists(mask, rows, cols));
}

TEST(Routing, FallbackRoutesASeededPartialShuffle) {
  const int64_t rows = 3, cols = 20, n = rows * cols;
  std::vector<double> p(n, 0.3);
  const FallbackDraw draw{true, 77, 5, 1ull << 32, 0.15};
  const TokenRouting r = route_tokens(Tensor::from_vector(p, {n}), rows, cols, draw);
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
  const TokenRouting e = route_tokens(Tensor::from_vector(p, {n}), rows, cols, FallbackDraw{});
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

TEST(CudaRouting, ListsAndFallbackMatchTheCpu) {
  REQUIRE_GPU();
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{5, 37}, {8, 2048}, {1, 1}, {2, 8192}}) {
    const std::vector<double> p = mixed_p(rows, cols, static_cast<uint64_t>(rows * cols));
    const FallbackDraw draw{true, 11, 3, 7ull << 32, 0.15};
    const TokenRouting cpu = route_tokens(Tensor::from_vector(p, {rows * cols}), rows, cols, draw);
    const TokenRouting gpu = route_tokens(Tensor::from_vector(p, {rows * cols}).to(Device::cuda()), rows, cols, draw);
    EXPECT_EQ(gpu.routed.device(), Device::cuda());
    EXPECT_EQ(gpu.fallback, cpu.fallback);
    EXPECT_EQ(gpu.count, cpu.count);
    EXPECT_EQ(gpu.routed.to_ints(), cpu.routed.to_ints());
    EXPECT_EQ(gpu.positions.to_ints(), cpu.positions.to_ints());
    EXPECT_EQ(gpu.bypass.to_ints(), cpu.bypass.to_ints());
    EXPECT_EQ(gpu.cu_seqlens.to_ints(), cpu.cu_seqlens.to_ints());
    // All below the threshold: the device's fallback picks the CPU's tokens.
    const std::vector<double> low(rows * cols, 0.25);
    const TokenRouting fc = route_tokens(Tensor::from_vector(low, {rows * cols}), rows, cols, draw);
    const TokenRouting fg = route_tokens(Tensor::from_vector(low, {rows * cols}).to(Device::cuda()), rows, cols, draw);
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
