// dtrn bench --checkpoint-every on the CPU: its saves are real checkpoints (they verify, and the loader
// restores the bench's weights and counters from them), and its account of them is consistent: bytes are
// the files on disk, a save's blocking part lies inside its step, every timed step is classed once. The
// timings themselves are not asserted (they depend on the machine).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dtrn/train/bench.h"
#include "dtrn/train/checkpoint.h"
#include "tensor_parallel_import.h"

namespace dtrn::train {
namespace {

namespace fs = std::filesystem;

// Small enough that a step and a save take milliseconds; weight decay is on, so that only the bench's
// learning rate of 0 keeps the weights at their initial values.
JobConfig small_config() {
  auto c = parse_job_config(
      "model: {d_model: 16, n_layers: 4, n_heads: 2, n_kv_heads: 1, d_ff: 24, vocab_size: 64, seq_len: 16, "
      "layout: TDTD}\n"
      "train: {steps: 1, micro_batch: 2, global_batch: 2, seed: 5, device: cpu, weight_decay: 0.1}\n"
      "data: {path: /nonexistent}\n"
      "checkpoint: {keep: 0}\n",
      {});
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

std::string fresh_dir(const std::string& name) {
  const std::string dir = "/tmp/dtrn-bench-ckpt-test-" + name + "-" + std::to_string(getpid());
  fs::remove_all(dir);
  return dir;
}

uint64_t files_bytes(const std::string& dir) {
  uint64_t bytes = 0;
  for (const auto& e : fs::directory_iterator(dir)) bytes += fs::file_size(e.path());
  return bytes;
}

std::string step_dir(const std::string& run_dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return run_dir + "/checkpoints/" + name;
}

TEST(BenchCheckpointTest, SavesAreCheckpointsTheLoaderAcceptsAndTheAccountAddsUp) {
  const JobConfig config = small_config();
  const std::string dir = fresh_dir("saves");
  BenchOptions o;
  o.warmup = 1;
  o.steps = 6;
  o.checkpoint_every = 2;
  o.checkpoint_dir = dir;
  auto res = run_bench(config, o);
  ASSERT_TRUE(res.ok()) << res.status().message();
  ASSERT_TRUE(res->checkpoints.has_value());
  const BenchCheckpoints& c = *res->checkpoints;
  EXPECT_EQ(c.run_dir, dir);
  EXPECT_EQ(c.every, 2);

  // After timed steps 2, 4 and 6, i.e. 3, 5 and 7 optimizer steps with the warm-up one.
  ASSERT_EQ(c.saves.size(), 3u);
  const std::vector<int64_t> steps = {3, 5, 7};
  uint64_t largest = 0;
  for (size_t i = 0; i < c.saves.size(); ++i) {
    const BenchSave& s = c.saves[i];
    SCOPED_TRACE("save at step " + std::to_string(s.step));
    EXPECT_EQ(s.step, steps[i]);
    const std::string ckpt = step_dir(dir, s.step);
    ASSERT_TRUE(verify_checkpoint(ckpt).ok()) << verify_checkpoint(ckpt).message();
    auto saved_step = read_checkpoint_step(ckpt);
    ASSERT_TRUE(saved_step.ok());
    EXPECT_EQ(*saved_step, s.step);
    // The bytes are the folder's files: the shards the manifest names (as `dtrn ckpt list` counts them)
    // plus the manifest itself.
    EXPECT_EQ(s.bytes, files_bytes(ckpt));
    auto listed = list_checkpoints(dir, false);
    ASSERT_TRUE(listed.ok());
    bool found = false;
    for (const CheckpointInfo& info : *listed) {
      if (info.step != s.step) continue;
      found = true;
      EXPECT_EQ(s.bytes, info.bytes + fs::file_size(ckpt + "/manifest.json"));
    }
    EXPECT_TRUE(found);
    // fp32 master weights and two AdamW moments: 12 bytes a parameter, plus the safetensors header and
    // the manifest (names, shapes, a sha256 per tensor and the config: well under 64 KiB for this model).
    EXPECT_GT(s.bytes, 12 * static_cast<uint64_t>(res->parameters));
    EXPECT_LT(s.bytes, 12 * static_cast<uint64_t>(res->parameters) + (64u << 10));
    EXPECT_GT(s.blocked_ms, 0);
    EXPECT_LE(s.blocked_ms, s.step_ms);
    EXPECT_GT(s.write_ms, 0);
    EXPECT_DOUBLE_EQ(s.write_mb_s, static_cast<double>(s.bytes) / 1e6 / (s.write_ms / 1e3));
    // Where the write went: every save appends its shard and manifest and fsyncs them and the folder;
    // the parts add up to the whole (the work between the calls is what remains, never negative).
    EXPECT_GT(s.append_ms, 0);
    EXPECT_GT(s.fsync_ms, 0);
    EXPECT_GT(s.fs_other_ms, 0);
    EXPECT_GE(s.compute_ms, 0);
    EXPECT_NEAR(s.append_ms + s.fsync_ms + s.fs_other_ms + s.compute_ms, s.write_ms, 1e-6 * s.write_ms + 1e-9);
    largest = std::max(largest, s.bytes);
  }
  // Every timed step is classed once. The step after a save always starts with its write in flight (a
  // save is joined at a step boundary at the earliest), so of 1 2 3 4 5 6 with saves after 2, 4 and 6,
  // step 1 is quiet and 3 and 5 are writing.
  EXPECT_EQ(c.quiet_steps, 1);
  EXPECT_EQ(c.writing_steps, 2);
  EXPECT_GT(c.quiet_step_ms, 0);
  EXPECT_GT(c.writing_step_ms, 0);
  EXPECT_EQ(c.disk_bytes, largest);
  EXPECT_GT(c.disk_mb_s, 0);
  EXPECT_FALSE(fs::exists(dir + "/disk-bandwidth.tmp"));

  // The loader takes the newest save: at learning rate 0 the weights are the seed's initial ones (bit for
  // bit, weight decay included), with 7 optimizer steps and the counters of 7 steps of 2 x 16 tokens.
  model::DtrnModel initial(config.model, config.routing, Device::cpu(), DType::kF32);
  initial.init(config.train.seed);
  model::DtrnModel loaded(config.model, config.routing, Device::cpu(), DType::kF32);
  loaded.init(config.train.seed + 1);
  AdamW optimizer(param_group_entries(loaded), AdamWOptions{});
  TrainProgress progress;
  auto latest = resolve_checkpoint(dir);
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  EXPECT_EQ(*latest, step_dir(dir, 7));
  const Status load = load_checkpoint(*latest, &loaded, &optimizer, &progress);
  ASSERT_TRUE(load.ok()) << load.message();
  const auto want = initial.parameters(), got = loaded.parameters();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].tensor.to_vector(), got[i].tensor.to_vector()) << want[i].name;
  }
  EXPECT_EQ(optimizer.step_count(), 7);
  EXPECT_EQ(progress.step, 7);
  EXPECT_EQ(progress.tokens, 7 * 2 * 16);
  EXPECT_EQ(progress.samples, 7 * 2);
  EXPECT_EQ(progress.seed, config.train.seed);
  fs::remove_all(dir);
}

TEST(BenchCheckpointTest, ATemporaryFolderIsRemovedAndBadRequestsAreRefused) {
  const JobConfig config = small_config();
  BenchOptions o;
  o.warmup = 0;
  o.steps = 2;
  o.checkpoint_every = 1;
  auto res = run_bench(config, o);
  ASSERT_TRUE(res.ok()) << res.status().message();
  ASSERT_EQ(res->checkpoints->saves.size(), 2u);
  EXPECT_FALSE(res->checkpoints->run_dir.empty());
  EXPECT_FALSE(fs::exists(res->checkpoints->run_dir));

  o.checkpoint_every = 3;  // more than --steps: no save would happen
  EXPECT_EQ(run_bench(config, o).status().code(), StatusCode::kInvalidArgument);

  const std::string dir = fresh_dir("taken");
  fs::create_directories(dir + "/checkpoints");
  o.checkpoint_every = 1;
  o.checkpoint_dir = dir;
  auto refused = run_bench(config, o);
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find(dir + " already holds checkpoints/"), std::string::npos)
      << refused.status().message();
  fs::remove_all(dir);
}

// The command line on the tiny preset (at micro-batch 2, to be quick), as bench/gpu_suite.sh's ckpt stage runs it on the 360m one: the
// JSON carries the account, and `dtrn ckpt verify` accepts the folder it leaves.
TEST(BenchCheckpointTest, TheCommandReportsJsonAndLeavesCheckpointsThatVerify) {
  const std::string dir = fresh_dir("cli");
  const std::string bench = std::string(DTRN_BINARY) + " bench --config " + DTRN_SOURCE_DIR +
                            "/deploy/configs/tiny.yaml --set train.micro_batch=2 --set train.global_batch=2 " +
                            "--steps 4 --warmup 1 --checkpoint-every 2 " +
                            "--checkpoint-dir " + dir + "/run --json > " + dir + ".out 2>&1";
  fs::create_directories(dir);
  const int status = std::system(bench.c_str());
  std::ifstream out(dir + ".out");
  const std::string text(std::istreambuf_iterator<char>(out), {});
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  const auto j = nlohmann::json::parse(text);
  const auto& c = j["checkpoint"];
  ASSERT_EQ(c["saves"].size(), 2u);
  EXPECT_EQ(c["saves"][1]["step"], 5);
  EXPECT_EQ(c["saves"][1]["bytes"].get<uint64_t>(), files_bytes(step_dir(dir + "/run", 5)));
  EXPECT_EQ(c["quiet_steps"].get<int64_t>() + c["writing_steps"].get<int64_t>() + 2, 4);
  EXPECT_GT(c["disk_MB_s"].get<double>(), 0);
  const std::string verify = std::string(DTRN_BINARY) + " ckpt verify " + dir + "/run > " + dir + ".out 2>&1";
  const int verified = std::system(verify.c_str());
  EXPECT_TRUE(WIFEXITED(verified) && WEXITSTATUS(verified) == 0);
  fs::remove_all(dir);
  fs::remove(dir + ".out");
}

}  // namespace
}  // namespace dtrn::train
