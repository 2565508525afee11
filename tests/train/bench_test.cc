// dtrn bench on the CPU: a pinned routed fraction holds in every D layer through the timed steps, the
// unpinned model reports what it routes, and two TP ranks under mpirun run the same model (split) and
// report once.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dtrn/runtime/file_io.h"
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

// On the CPU every op runs as it is called, so each phase's work is done when the host returns: the
// host's and the device's times agree up to the synchronisation's own cost (a no-op there).
TEST(BenchTest, PhasesSplitAStepBetweenForwardBackwardAndOptimizer) {
  BenchOptions o;
  o.steps = 2;
  o.warmup = 1;
  o.phase_steps = 2;
  auto res = run_bench(bench_config("TDTD"), o);
  ASSERT_TRUE(res.ok()) << res.status().message();
  ASSERT_TRUE(res->phases.has_value());
  const BenchPhases& p = *res->phases;
  EXPECT_EQ(p.steps, 2);
  for (auto [host, done] : {std::pair{p.forward_host_ms, p.forward_ms}, {p.backward_host_ms, p.backward_ms},
                            {p.optimizer_host_ms, p.optimizer_ms}}) {
    EXPECT_GT(host, 0);
    EXPECT_LE(host, done);
    EXPECT_LT(done - host, 0.1 * done + 0.5);
  }

  o.phase_steps = -1;
  auto bad = run_bench(bench_config("TDTD"), o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--phases"), std::string::npos) << bad.status().message();
}

// The command line: --phases N adds the split to the JSON; a value that is not an integer is a usage
// error naming the flag (exit status 2).
TEST(BenchTest, PhasesFlagReportsInJsonAndRefusesANonInteger) {
  const std::string out = "/tmp/dtrn-bench-phases-" + std::to_string(getpid()) + ".out";
  const std::string base = std::string(DTRN_BINARY) + " bench --config " + DTRN_SOURCE_DIR +
                           "/deploy/configs/tiny.yaml --set train.micro_batch=2 --set train.global_batch=2 " +
                           "--steps 1 --warmup 0 ";
  auto run = [&](const std::string& flags, std::string* text) {
    const int status = std::system((base + flags + " > " + out + " 2>&1").c_str());
    std::ifstream in(out);
    text->assign(std::istreambuf_iterator<char>(in), {});
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string text;
  ASSERT_EQ(run("--phases 2 --json", &text), 0) << text;
  const auto j = nlohmann::json::parse(text);
  ASSERT_TRUE(j.contains("phases")) << text;
  EXPECT_EQ(j["phases"]["steps"], 2);
  for (const char* phase : {"forward", "backward", "optimizer"}) {
    const double host = j["phases"][std::string(phase) + "_host_ms"], done = j["phases"][std::string(phase) + "_ms"];
    EXPECT_GT(host, 0) << phase;
    EXPECT_LE(host, done) << phase;
  }
  EXPECT_EQ(run("--phases two", &text), 2) << text;
  EXPECT_NE(text.find("--phases"), std::string::npos) << text;
  std::remove(out.c_str());
}

// At learning rate 0 every step sees the same weights and tokens, so the split model's loss is the whole
// one's up to the order of the partial sums (f32, losses near 11: 1e-4 is far above that rounding and far
// below any real difference).
TEST(BenchTest, TensorParallelRanksRunTheSameModelAndRankZeroReports) {
  if (std::string(DTRN_MPIEXEC).empty()) GTEST_SKIP() << "mpirun not found at configure time";
  BenchOptions o;
  o.steps = 2;
  o.warmup = 1;
  o.routed_fraction = 0.25;
  auto one = run_bench(bench_config("TDTD"), o);
  ASSERT_TRUE(one.ok()) << one.status().message();
  EXPECT_EQ(one->tp, 1);

  const std::string dir = "/tmp/dtrn-bench-tp-" + std::to_string(getpid());
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  ASSERT_TRUE(write_file_atomic(dir + "/job.yaml", to_yaml(bench_config("TDTD"))).ok());
  const std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " +
                          std::string(DTRN_MPIEXEC) + " -np 2 --oversubscribe " + DTRN_BINARY + " bench --config " +
                          dir + "/job.yaml --set parallel.tp=2 --steps 2 --warmup 1 --routed-fraction 0.25 --json > " +
                          dir + "/out 2> " + dir + "/err";
  const int status = std::system(cmd.c_str());
  std::ifstream err(dir + "/err");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << std::string(std::istreambuf_iterator<char>(err), {});
  std::ifstream out(dir + "/out");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(out, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 1u);  // rank 0 alone
  EXPECT_EQ(lines[0]["tp"], 2);
  EXPECT_DOUBLE_EQ(lines[0]["params_M"].get<double>(), one->parameters / 1e6);
  EXPECT_NEAR(lines[0]["loss"].get<double>(), one->final_loss, 1e-4);
  ASSERT_EQ(lines[0]["layers"].size(), one->routed_fraction.size());
  for (size_t i = 0; i < one->routed_fraction.size(); ++i) {
    EXPECT_EQ(lines[0]["layers"][i]["f"].get<double>(), one->routed_fraction[i].second);
  }
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace dtrn::train
