// combine_paths and gather_rows (ops.h), the D block's data movement: on the CPU against the same result
// composed from general ops (gathers, broadcast products, head expansion by index_select, scatter_rows)
// and against finite differences; on a GPU, the CUDA kernels against the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/rng.h"
#include "gpu_compare.h"
#include "gradcheck.h"

namespace dtrn {
namespace {

using testing::expect_gradients_match;
using testing::random_input;

struct Case {
  int64_t n, heads, kv_heads, d, routed;
};

// A random partition of 0..n-1 into `routed` ascending tokens and the ascending rest.
std::pair<Tensor, Tensor> partition(int64_t n, int64_t routed, uint64_t seed) {
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  RngStream rng(seed, 3);
  for (int64_t i = n - 1; i > 0; --i) std::swap(all[i], all[rng.next_below(i + 1)]);
  std::vector<int64_t> a(all.begin(), all.begin() + routed), b(all.begin() + routed, all.end());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return {Tensor::from_ints(a, {routed}, DType::kI32), Tensor::from_ints(b, {n - routed}, DType::kI32)};
}

// The same y from general ops: p * o at the routed rows, (1 - p) * v expanded to H heads at the others.
Tensor composed(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed, const Tensor& bypass,
                const Case& c) {
  std::vector<int64_t> map(c.heads);
  for (int64_t h = 0; h < c.heads; ++h) map[h] = h / (c.heads / c.kv_heads);
  Tensor head_map = Tensor::from_ints(map, {c.heads}, DType::kI32);
  const int64_t nb = bypass.numel();
  Tensor pa = index_select(p, 0, routed).reshape({routed.numel(), 1});
  Tensor pb = add_scalar(scale(index_select(p, 0, bypass), -1.0), 1.0).reshape({nb, 1});
  Tensor vb = index_select(index_select(v, 0, bypass).reshape({nb, c.kv_heads, c.d}), 1, head_map);
  return scatter_rows({mul(o, pa), mul(vb.reshape({nb, c.heads * c.d}), pb)}, {routed, bypass}, c.n);
}

const std::vector<Case> kCases = {
    {9, 6, 2, 4, 4},   // grouped heads, a mixed partition
    {7, 3, 3, 2, 0},   // nothing routed
    {5, 4, 1, 3, 5},   // everything routed, one KV head
    {11, 2, 2, 5, 1},  // one routed token
};

TEST(CombinePaths, EqualsGathersProductsAndScattersWithTheirGradients) {
  for (const Case& c : kCases) {
    SCOPED_TRACE("n " + std::to_string(c.n) + " heads " + std::to_string(c.heads) + "/" +
                 std::to_string(c.kv_heads) + " routed " + std::to_string(c.routed));
    const auto [routed, bypass] = partition(c.n, c.routed, c.n);
    Tensor o = random_input({c.routed, c.heads * c.d}, 1).set_requires_grad(true);
    Tensor v = random_input({c.n, c.kv_heads * c.d}, 2).set_requires_grad(true);
    Tensor p = random_input({c.n}, 3, 0.0, 1.0).set_requires_grad(true);
    Tensor w = random_input({c.n, c.heads * c.d}, 4);
    Tensor got = combine_paths(o, v, p, routed, bypass, c.heads);
    sum(mul(got, w)).backward();
    const std::vector<Tensor> grads = {o.grad(), v.grad(), p.grad()};
    for (Tensor* t : {&o, &v, &p}) *t = t->detach().set_requires_grad(true);
    Tensor want = composed(o, v, p, routed, bypass, c);
    sum(mul(want, w)).backward();
    EXPECT_LT(testing::relative_error(got, want), 1e-15);
    EXPECT_LT(testing::relative_error(grads[0], o.grad()), 1e-15);
    EXPECT_LT(testing::relative_error(grads[1], v.grad()), 1e-15);
    EXPECT_LT(testing::relative_error(grads[2], p.grad()), 1e-14);
  }
}

TEST(CombinePaths, GradientsMatchFiniteDifferences) {
  const Case c = kCases[0];
  const auto [routed, bypass] = partition(c.n, c.routed, 5);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return combine_paths(in[0], in[1], in[2], routed, bypass, c.heads); },
      {random_input({c.routed, c.heads * c.d}, 6), random_input({c.n, c.kv_heads * c.d}, 7),
       random_input({c.n}, 8, 0.0, 1.0)});
}

TEST(CombinePaths, RefusesAnIncompletePartitionAndAWrongScaleType) {
  Tensor o = Tensor::zeros({2, 8}, DType::kF32), v = Tensor::zeros({5, 4}, DType::kF32);
  Tensor p = Tensor::zeros({5}, DType::kF32);
  Tensor routed = Tensor::from_ints({1, 3}, {2}, DType::kI32), bypass = Tensor::from_ints({0, 2}, {2}, DType::kI32);
  EXPECT_THAT([&] { combine_paths(o, v, p, routed, bypass, 2); },
              testing::throws_error_naming("combine_paths", "2 routed and 2 bypassed"));
  Tensor full_bypass = Tensor::from_ints({0, 2, 4}, {3}, DType::kI32);
  EXPECT_THAT([&] { combine_paths(o, v, p.to(DType::kF64), routed, full_bypass, 2); },
              testing::throws_error_naming("combine_paths", "p must be f32"));
  EXPECT_THAT([&] { combine_paths(o, v, p, routed, full_bypass, 3); },
              testing::throws_error_naming("combine_paths", "3 heads"));
  Tensor overlapping = Tensor::from_ints({0, 3, 4}, {3}, DType::kI32);
  EXPECT_THAT([&] { combine_paths(o, v, p, routed, overlapping, 2); },
              testing::throws_error_naming("combine_paths", "token 3 is both routed and bypassed"));
}

TEST(GatherRows, SelectsRowsAndScattersTheGradientIntoZeros) {
  Tensor x = random_input({6, 2, 3}, 9).set_requires_grad(true);
  Tensor index = Tensor::from_ints({5, 0, 3}, {3}, DType::kI32);
  Tensor got = gather_rows(x, index);
  EXPECT_EQ(got.to_vector(), index_select(x, 0, index).to_vector());
  Tensor w = random_input({3, 2, 3}, 10);
  sum(mul(got, w)).backward();
  const std::vector<double> g = x.grad().to_vector(), wv = w.to_vector();
  const std::vector<int64_t> rows = {5, 0, 3};
  for (int64_t r = 0; r < 6; ++r) {
    const auto at = std::find(rows.begin(), rows.end(), r);
    for (int64_t e = 0; e < 6; ++e) {
      EXPECT_EQ(g[r * 6 + e], at == rows.end() ? 0.0 : wv[(at - rows.begin()) * 6 + e]) << "row " << r;
    }
  }
}

// The GPU kernels against the CPU: the products are single roundings of the same f32 values, so f32
// forward values, d_o and dv agree to the bit; dp is a dot product whose order differs (a warp
// reduction against a sequential double sum), so it agrees to f32 accumulation error. bf16 results are
// the f32 ones rounded once (gpu_compare.h). Head sizes 64 and 8 take the 16-byte packs, 6 and 3 single
// elements.
TEST(CudaCombinePaths, MatchesTheCpuForwardAndBackward) {
  REQUIRE_GPU();
  using namespace gpu_testing;
  const std::vector<Case> cases = {{300, 15, 5, 64, 31}, {97, 4, 2, 8, 0}, {50, 6, 3, 6, 50}, {40, 2, 1, 3, 1}};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " d " + std::to_string(c.d) + " routed " + std::to_string(c.routed));
      const auto [routed, bypass] = partition(c.n, c.routed, 11);
      // Inputs rounded to the GPU's dtype first, so both devices read the same values.
      Tensor o = random_cpu({c.routed, c.heads * c.d}, 12).to(dt).to(DType::kF32);
      Tensor v = random_cpu({c.n, c.kv_heads * c.d}, 13).to(dt).to(DType::kF32);
      Tensor p = random_cpu({c.n}, 14, DType::kF32, 0.0, 1.0);
      Tensor dy = random_cpu({c.n, c.heads * c.d}, 15).to(dt).to(DType::kF32);
      auto leaf = [](const Tensor& t, Device dev, DType type) {
        Tensor copy = t.to(type).to(dev).detach().clone();
        copy.set_requires_grad(true);
        return copy;
      };
      auto run = [&](Device dev, DType type) {
        Tensor og = leaf(o, dev, type), vg = leaf(v, dev, type), pg = leaf(p, dev, DType::kF32);
        Tensor y = combine_paths(og, vg, pg, routed.to(dev), bypass.to(dev), c.heads);
        y.backward(dy.to(type).to(dev));
        return std::vector<Tensor>{y, og.grad(), vg.grad(), pg.grad()};
      };
      const std::vector<Tensor> cpu = run(Device::cpu(), DType::kF32), gpu = run(kGpu, dt);
      const char* names[] = {"y", "d_o", "dv", "dp"};
      for (int i = 0; i < 4; ++i) {
        Tensor got = gpu[i].to(Device::cpu()).to(DType::kF32);
        if (dt == DType::kF32 && i < 3) {
          EXPECT_EQ(bits_of(got), bits_of(cpu[i])) << names[i];
        } else {
          // dp sums up to H*D products of values in [-1, 1): f32 accumulation error well under 1e-4.
          expect_close(got, cpu[i], widen_for(dt, Tol{1e-4, 1e-5}), names[i]);
        }
      }
    }
  }
}

}  // namespace
}  // namespace dtrn
