// Sharded checkpoints under a real `mpirun --oversubscribe` (Open MPI, CPU ranks): every rank writes its
// shard, the ranks commit together, and a checkpoint resumes on another layout (dp 2 -> 1, 2, 4 with
// ZeRO-1; plain dp 2 -> 1; dp 1 -> 2). Each resumed run is compared with the uninterrupted run the
// checkpoint came from: its checkpoint at step 4 of 8 is resumed (the step-8 one removed first) and steps
// 5..8 must read exactly the same samples (samples_hash) with the loss curve within the reduction-order
// tolerance; on the same layout the metrics must be equal, timing aside (CPU runs are deterministic). A
// rank killed with SIGKILL at each point of a save leaves the previous checkpoint committed and the run
// resumable; `dtrn ckpt verify` detects a flipped bit in rank 1's shard. Skipped where mpirun was not
// found. A dp 2 x tp 2 save resumes at its own layout and at dp 1, 2 and 4 with tp 1.
//
// Tolerances: as in parallel_training_test.cc, a different DP degree only changes the order in which f32
// gradients are summed (~1e-7 relative per step), far inside 1e-3 on the loss after 4 more Adam steps;
// routing decisions come out identical.
#include <gmock/gmock.h>

#include <filesystem>
#include <fstream>

#include "checkpoint_format.h"
#include "checkpoint_read.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/trainer.h"
#include "trainer_fixture.h"

namespace dtrn::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr double kLossTolerance = 1e-3;

class ShardedResumeTest : public TrainerTest {
 protected:
  void SetUp() override {
    if (std::string(DTRN_MPIEXEC).empty()) GTEST_SKIP() << "mpirun not found at configure time";
  }

  // 8 steps of 8 samples, a checkpoint every 4; micro-batches of 2, so dp 1, 2 and 4 all divide the batch.
  static JobConfig job(std::vector<std::string> sets) {
    std::vector<std::string> all = {"train.steps=8", "train.eval_every=0", "checkpoint.every=4",
                                    "train.micro_batch=2", "train.global_batch=8", "parallel.timeout_s=60"};
    all.insert(all.end(), sets.begin(), sets.end());
    return config(all);
  }
  static std::vector<std::string> layout(int dp, int zero) {
    return {"parallel.dp=" + std::to_string(dp), "parallel.zero=" + std::to_string(zero)};
  }
  static std::string path(const std::string& name) { return root_ + "/" + name; }
  static std::string step_dir(const std::string& run, int step) {
    char name[32];
    std::snprintf(name, sizeof name, "/checkpoints/step-%08d", step);
    return run + name;
  }

  // Trains `c` on `ranks` processes (mpirun for more than one, else in this process) in `run`.
  static void train(int ranks, const JobConfig& c, const std::string& run, bool resume) {
    if (ranks == 1) {
      TrainRunOptions o;
      o.run_dir = run;
      o.quiet = true;
      o.resume = resume;
      auto r = run_training(c, o);
      ASSERT_TRUE(r.ok()) << r.status().message();
      return;
    }
    std::string err;
    ASSERT_EQ(mpirun(ranks, c, run, &err, "", "", resume ? "--resume" : ""), 0) << err;
  }

  // A copy of `run` as it was after step 4: its step-8 checkpoint removed, so a resume starts at step 4.
  static std::string at_step_4(const std::string& run, const std::string& name) {
    const std::string copy = path(name);
    fs::remove_all(copy);
    fs::copy(run, copy, fs::copy_options::recursive);
    fs::remove_all(step_dir(copy, 8));
    return copy;
  }

  // The uninterrupted dp=2 ZeRO-1 run the tests resume from (trained once per test suite, in its folder;
  // tests copy it).
  static std::string zero_dp2() {
    const std::string run = path("zero-dp2");
    if (!fs::exists(step_dir(run, 8) + "/" + kManifestFile)) train(2, job(layout(2, 1)), run, false);
    return run;
  }

  // The shard files of a checkpoint by rank.
  static std::map<int64_t, std::string> shards(const std::string& dir) {
    auto m = read_manifest(dir);
    EXPECT_TRUE(m.ok()) << m.status().message();
    std::map<int64_t, std::string> out;
    for (const ShardEntry& e : m->shards) out[e.rank] = dir + "/" + e.file;
    return out;
  }
};

TEST_F(ShardedResumeTest, ZeroOneAtDp2ResumesAtDp1Dp2AndDp4) {
  const std::string whole = zero_dp2();
  // ZeRO-1 shards the moments over both ranks: two shards, the layout recorded.
  auto m = read_manifest(step_dir(whole, 4));
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->layout.dp, 2);
  EXPECT_EQ(m->layout.zero, 1);
  EXPECT_EQ(shards(step_dir(whole, 4)).size(), 2u);
  ASSERT_TRUE(verify_checkpoint(step_dir(whole, 4)).ok());
  // Export (and eval) read it whole: every parameter of the model, at its global shape, the moments left out.
  auto weights = read_checkpoint_weights(step_dir(whole, 4));
  ASSERT_TRUE(weights.ok()) << weights.status().message();
  model::DtrnModel shape_of(job({}).model, job({}).routing, Device::cpu(), DType::kF32);
  const auto params = shape_of.parameters();
  ASSERT_EQ(weights->tensors.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(weights->tensors[i].first, params[i].name);
    EXPECT_EQ(weights->tensors[i].second.shape(), params[i].tensor.shape()) << params[i].name;
  }

  // Same layout: bit for bit.
  const std::string same = at_step_4(whole, "zero-dp2-to-dp2");
  train(2, job(layout(2, 1)), same, true);
  EXPECT_EQ(metrics(same), metrics(whole));
  // Other layouts: the same samples, the curve within the reduction-order tolerance.
  const std::string one = at_step_4(whole, "zero-dp2-to-dp1");
  train(1, job(layout(1, 0)), one, true);
  expect_same_curve(whole, one, kLossTolerance, 8);
  const std::string four = at_step_4(whole, "zero-dp2-to-dp4");
  train(4, job(layout(4, 1)), four, true);
  expect_same_curve(whole, four, kLossTolerance, 8);
  // The resumed runs wrote their own checkpoints at step 8, in their layouts.
  EXPECT_EQ(shards(step_dir(one, 8)).size(), 1u);
  EXPECT_EQ(shards(step_dir(four, 8)).size(), 4u);
  EXPECT_TRUE(verify_checkpoint(step_dir(four, 8)).ok());
}

// dp 2 x tp 2 with ZeRO-1 (4 ranks: TP slices of the parameters, ZeRO pieces of the moments) resumes on its
// own layout bit for bit, and at dp 1 (one process), dp 2 x tp 1 and dp 4: each rank assembles its boxes
// from the other layout's slices, and the run reads the same samples.
TEST_F(ShardedResumeTest, Dp2Tp2ResumesAtItsLayoutAndAtDp1Dp2AndDp4) {
  auto grid = [](int dp, int tp, int zero) {
    std::vector<std::string> sets = layout(dp, zero);
    sets.push_back("parallel.tp=" + std::to_string(tp));
    return job(sets);
  };
  const std::string whole = path("dp2tp2");
  train(4, grid(2, 2, 1), whole, false);
  auto m = read_manifest(step_dir(whole, 4));
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->layout.dp, 2);
  EXPECT_EQ(m->layout.tp, 2);
  EXPECT_EQ(m->layout.zero, 1);
  ASSERT_TRUE(verify_checkpoint(step_dir(whole, 4)).ok());
  // Export assembles every parameter whole from the TP slices; a one-process load of the same checkpoint
  // (the resharding read, through each rank's requests) holds the same values bit for bit.
  auto weights = read_checkpoint_weights(step_dir(whole, 4));
  ASSERT_TRUE(weights.ok()) << weights.status().message();
  model::DtrnModel loaded(job({}).model, job({}).routing, Device::cpu(), DType::kF32);
  ASSERT_TRUE(load_checkpoint(step_dir(whole, 4), &loaded, nullptr, nullptr).ok());
  const auto params = loaded.parameters();
  ASSERT_EQ(weights->tensors.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(weights->tensors[i].first, params[i].name);
    EXPECT_EQ(weights->tensors[i].second.to_vector(), params[i].tensor.to_vector()) << params[i].name;
  }

  const std::string same = at_step_4(whole, "dp2tp2-to-dp2tp2");
  train(4, grid(2, 2, 1), same, true);
  EXPECT_EQ(metrics(same), metrics(whole));
  for (int dp : {1, 2, 4}) {
    SCOPED_TRACE("dp " + std::to_string(dp) + " x tp 1");
    const std::string other = at_step_4(whole, "dp2tp2-to-dp" + std::to_string(dp));
    train(dp, grid(dp, 1, dp > 1 ? 1 : 0), other, true);
    expect_same_curve(whole, other, kLossTolerance, 8);
  }
}

TEST_F(ShardedResumeTest, PlainDp2AndOneProcessResumeOnEachOther) {
  // Plain DP replicates everything: rank 0 alone writes, rank 1 owns no data and writes no shard.
  const std::string two = path("plain-dp2");
  train(2, job(layout(2, 0)), two, false);
  const auto written = shards(step_dir(two, 4));
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written.begin()->first, 0);
  const std::string to_one = at_step_4(two, "plain-dp2-to-dp1");
  train(1, job(layout(1, 0)), to_one, true);
  expect_same_curve(two, to_one, kLossTolerance, 8);

  const std::string one = path("plain-dp1");
  train(1, job(layout(1, 0)), one, false);
  const std::string to_two = at_step_4(one, "plain-dp1-to-dp2");
  train(2, job(layout(2, 1)), to_two, true);
  expect_same_curve(one, to_two, kLossTolerance, 8);
}

TEST_F(ShardedResumeTest, VerifyFindsAFlippedBitInRank1sShard) {
  const std::string run = path("flip");
  fs::copy(zero_dp2(), run, fs::copy_options::recursive);
  const std::string dir = step_dir(run, 8);
  const std::string shard = shards(dir).at(1);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(fs::file_size(shard) / 2);  // inside the tensor data
    f.seekg(at);
    char c = 0;
    f.get(c);
    f.seekp(at);
    f.put(static_cast<char>(c ^ 0x10));
  }
  const std::string out = run + ".verify";
  const int status = std::system((std::string(DTRN_BINARY) + " ckpt verify " + dir + " > " + out + " 2>&1").c_str());
  EXPECT_EQ(WEXITSTATUS(status), 1);
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_THAT(text, HasSubstr(shard + ": tensor '"));
  EXPECT_THAT(text, HasSubstr("sha256 mismatch"));
  // Loading refuses it too, and a resume falls back to the step-4 checkpoint.
  std::vector<std::string> skipped;
  auto resolved = resolve_checkpoint(run, &skipped);
  ASSERT_TRUE(resolved.ok()) << resolved.status().message();
  EXPECT_EQ(*resolved, step_dir(run, 4));
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr(shard));
}

// A rank killed at a point of the step-8 save (rank, point, the step then committed): the newest
// committed checkpoint verifies, and a restart on the same layout cleans the leftovers and ends with
// the uninterrupted run's metrics.
struct Crash {
  int rank;
  const char* point;
  int committed;
};

class ShardedCrashTest : public ShardedResumeTest, public ::testing::WithParamInterface<Crash> {};

TEST_P(ShardedCrashTest, AKilledRankLeavesTheLastCommittedCheckpoint) {
  const Crash crash = GetParam();
  const std::string whole = zero_dp2();
  const std::string run = at_step_4(whole, std::string("crash-") + crash.point);
  const std::string cmd = train_command(job(layout(2, 1)), run, "--resume");
  const std::string victim = "-np 1 -x DTRN_CKPT_CRASH_AT=" + std::string(crash.point) + " " + cmd;
  const std::string other = "-np 1 " + cmd;
  std::string err;
  EXPECT_NE(mpirun_apps(crash.rank == 0 ? victim + " : " + other : other + " : " + victim, run, &err), 0);
  // The survivor names the killed rank; the save it died in left its folder behind, uncommitted unless
  // the manifest was renamed.
  EXPECT_THAT(err, HasSubstr("lost rank " + std::to_string(crash.rank))) << err;
  ASSERT_TRUE(fs::exists(step_dir(run, 8)));
  EXPECT_EQ(fs::exists(step_dir(run, 8) + "/" + kManifestFile), crash.committed == 8);
  auto resolved = resolve_checkpoint(run);
  ASSERT_TRUE(resolved.ok()) << resolved.status().message();
  EXPECT_EQ(*resolved, step_dir(run, crash.committed));
  EXPECT_TRUE(verify_checkpoint(*resolved).ok());

  train(2, job(layout(2, 1)), run, true);
  EXPECT_EQ(metrics(run), metrics(whole));
  EXPECT_TRUE(verify_checkpoint(step_dir(run, 8)).ok());
  for (const auto& entry : fs::directory_iterator(step_dir(run, 8))) {
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
  }
}

INSTANTIATE_TEST_SUITE_P(Points, ShardedCrashTest,
                         ::testing::Values(Crash{1, "shard-tmp-written", 4}, Crash{1, "shard-renamed", 4},
                                           Crash{0, "manifest-tmp-written", 4}, Crash{0, "manifest-renamed", 8}),
                         [](const auto& info) {
                           std::string name = std::string("rank") + std::to_string(info.param.rank) + "_" + info.param.point;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace dtrn::train
