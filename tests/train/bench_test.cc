// dtrn bench on the CPU: a pinned routed fraction holds in every D layer through the timed steps, and
// the unpinned model reports what it routes.
#include <gtest/gtest.h>

#include <cmath>

#include "dtrn/train/bench.h"

namespace dtrn::train {
namespace {

JobConfig bench_config(const std::string& layout) {
  const std::string yaml =
      "model: {d_model: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, d_ff: 160, seq_len: 64, layout: " + layout +
      "}\n"
      "train: {steps: 1, micro_batch: 4, global_batch: 4, seed: 3, device: cpu}\n"
      "data: {path: /nonexistent}\n";
  auto c = parse_job_config(yaml, {});
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

TEST(BenchTest, APinnedRoutedFractionHoldsInEveryDLayer) {
  for (double r : {0.1, 0.25}) {
    BenchOptions o;
    o.steps = 6;
    o.warmup = 2;
    o.routed_fraction = r;
    auto res = run_bench(bench_config("TDTD"), o);
    ASSERT_TRUE(res.ok()) << res.status().message();
    ASSERT_EQ(res->routed_fraction.size(), 2u);
    // 256 tokens reach each D layer and the threshold sits between the two order statistics around
    // the (1 - r)-quantile, so every step routes r of them to within one token.
    for (const auto& [layer, f] : res->routed_fraction) {
      EXPECT_NEAR(f, r, 1.0 / 256 + 1e-9) << "layer " << layer << " r " << r;
    }
    EXPECT_GT(res->tokens_per_s, 0);
    EXPECT_TRUE(std::isfinite(res->final_loss));
  }
}

TEST(BenchTest, WithoutPinningTheMeasuredFractionIsReportedAndDenseHasNone) {
  BenchOptions o;
  o.steps = 2;
  o.warmup = 1;
  auto routed = run_bench(bench_config("TDTD"), o);
  ASSERT_TRUE(routed.ok()) << routed.status().message();
  ASSERT_EQ(routed->routed_fraction.size(), 2u);
  for (const auto& [layer, f] : routed->routed_fraction) {
    EXPECT_GE(f, 0.0);
    EXPECT_LE(f, 1.0);
  }
  auto dense = run_bench(bench_config("TTTT"), o);
  ASSERT_TRUE(dense.ok()) << dense.status().message();
  EXPECT_TRUE(dense->routed_fraction.empty());
}

}  // namespace
}  // namespace dtrn::train
