// The commit protocol under failure (src/checkpoint_commit.h): every injected I/O fault (FaultEnv)
// fails the save with one line and leaves the previous checkpoint valid; a SIGKILL at every named
// point of a save leaves a committed checkpoint that resume finds, and the next start cleans the
// leftovers; resharding assembles any layout's slices from hand-built dp x tp shards; four ranks
// (threads) commit one checkpoint through the barrier and one process loads it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <set>

#include "checkpoint_commit.h"
#include "checkpoint_format.h"
#include "dtrn/train/checkpoint.h"
#include "fault_env.h"
#include "reshard.h"
#include "tiny_model.h"

namespace dtrn::train {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

model::ModelConfig tiny() { return tiny_model(2, "TD"); }

class CommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dtrn_commit_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    run_ = tmpl;
    model_ = std::make_unique<model::DtrnModel>(tiny(), model::RoutingConfig{}, Device::cpu(), DType::kF32);
    model_->init(1);
    std::vector<ParamGroupEntry> entries;
    for (const auto& p : model_->parameters()) entries.push_back({p.name, p.tensor, p.decay, Tensor(), false});
    opt_ = std::make_unique<AdamW>(entries, AdamWOptions{});
  }
  void TearDown() override { fs::remove_all(run_); }

  StatusOr<std::string> save(int64_t step, Env* env = nullptr) {
    TrainProgress p;
    p.step = step;
    SaveOptions o;
    o.env = env;
    return save_checkpoint(run_, *model_, *opt_, p, "config", o);
  }
  std::set<std::string> entries(const std::string& dir) const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename());
    return names;
  }

  std::string run_;
  std::unique_ptr<model::DtrnModel> model_;
  std::unique_ptr<AdamW> opt_;
};

TEST_F(CommitTest, EveryInjectedFaultFailsInOneLineAndKeepsThePreviousCheckpoint) {
  ASSERT_TRUE(save(1).ok());
  const std::string step1 = run_ + "/checkpoints/step-00000001";
  struct Case {
    Fault fault;
    std::string path_part;
    std::string message;
  };
  const std::vector<Case> cases = {
      {Fault::kSyncFails, ".safetensors.tmp", "fsync: Input/output error"},
      {Fault::kDiskFull, ".safetensors.tmp", "No space left on device"},
      {Fault::kShortWrite, ".safetensors.tmp", "short write"},
      {Fault::kRenameFails, ".safetensors", "cannot rename"},
      {Fault::kSyncFails, "manifest.json.tmp", "fsync: Input/output error"},
      {Fault::kDiskFull, "manifest.json.tmp", "No space left on device"},
      {Fault::kRenameFails, "manifest.json", "cannot rename"},
      {Fault::kSyncDirFails, "step-00000002", "fsync: Input/output error"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path_part + " / " + c.message);
    FaultEnv env(Env::posix());
    env.arm(c.fault, c.path_part, 100);
    auto r = save(2, &env);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(env.armed(), 0u) << "the fault never fired";
    EXPECT_THAT(r.status().message(), HasSubstr(c.message));
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
    // Nothing of the failed save is taken for a checkpoint; the previous one is intact.
    EXPECT_EQ(resolve_checkpoint(run_).value(), step1);
    EXPECT_TRUE(verify_checkpoint(step1).ok());
    EXPECT_FALSE(fs::exists(run_ + "/checkpoints/step-00000002/manifest.json"));
    std::vector<std::string> removed;
    ASSERT_TRUE(clean_checkpoints(run_, &removed).ok());
    EXPECT_EQ(entries(run_ + "/checkpoints"), (std::set<std::string>{"latest", "step-00000001"}));
  }
  // The disk recovered: the same save succeeds.
  ASSERT_TRUE(save(2).ok());
  EXPECT_EQ(resolve_checkpoint(run_).value(), run_ + "/checkpoints/step-00000002");
}

TEST_F(CommitTest, AFailedReSaveOfACommittedStepKeepsIt) {
  ASSERT_TRUE(save(3).ok());
  const std::string step3 = run_ + "/checkpoints/step-00000003";
  const auto before = entries(step3);
  FaultEnv env(Env::posix());
  env.arm(Fault::kRenameFails, "manifest.json");
  ASSERT_FALSE(save(3, &env).ok());
  EXPECT_EQ(entries(step3), before);  // the failed save's shard removed, the committed one untouched
  EXPECT_TRUE(verify_checkpoint(step3).ok());
}

// A forked child saves step 2 into the same run directory and is killed (SIGKILL) at the point; the
// CPU tests start no threads, so gtest's "fast" (fork-only) death tests are safe here.
class CrashTest : public CommitTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(CrashTest, KillDuringASaveLeavesACommittedCheckpoint) {
  GTEST_FLAG_SET(death_test_style, "fast");
  ASSERT_TRUE(save(1).ok());
  EXPECT_EXIT(
      {
        ::setenv("DTRN_CKPT_CRASH_AT", GetParam(), 1);
        (void)save(2);
        std::_Exit(0);  // the point was never reached: the test fails on the exit status
      },
      ::testing::KilledBySignal(SIGKILL), "");
  auto found = resolve_checkpoint(run_);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  const bool committed = std::string(GetParam()) == "manifest-renamed" || std::string(GetParam()) == "latest-moved";
  EXPECT_EQ(*found, run_ + (committed ? "/checkpoints/step-00000002" : "/checkpoints/step-00000001"));
  std::vector<std::string> removed;
  ASSERT_TRUE(clean_checkpoints(run_, &removed).ok());
  EXPECT_TRUE(verify_checkpoint(*found).ok());
  for (const auto& e : fs::recursive_directory_iterator(run_ + "/checkpoints")) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  }
  // Every step folder left is a committed, valid checkpoint; the next save works.
  for (const std::string& name : entries(run_ + "/checkpoints")) {
    if (name != "latest") {
      EXPECT_TRUE(verify_checkpoint(run_ + "/checkpoints/" + name).ok()) << name;
    }
  }
  ASSERT_TRUE(save(2).ok());
  EXPECT_EQ(entries(run_ + "/checkpoints/step-00000002").size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Points, CrashTest,
                         ::testing::Values("shard-tmp-written", "shard-renamed", "manifest-tmp-written",
                                           "manifest-renamed", "latest-moved"));

// A [6, 4] tensor saved by dp=2 x tp=2: tp splits rows in two, ZeRO-1 splits each tp part's rows over
// dp; a [4] replicated bias saved once by rank 0. Loading any other layout's boxes gives the same values.
TEST(Reshard, AnyLayoutReadsTheSlicesOfAnother) {
  auto iota = [](Shape shape, float base) {
    Tensor t = Tensor::empty(shape, DType::kF32, Device::cpu());
    for (int64_t i = 0; i < shape_numel(shape); ++i) t.data<float>()[i] = base + static_cast<float>(i);
    return t;
  };
  const Tensor w = iota({6, 4}, 0), b = iota({4}, 100);
  auto box = [](const Tensor& t, int64_t row0, int64_t rows, int64_t col0, int64_t cols) {
    return t.narrow(0, row0, rows).narrow(1, col0, cols).contiguous();
  };
  std::vector<TensorSlice> saved;
  // tp rank r owns columns [2r, 2r + 2); dp rank d owns rows [3d, 3d + 3) of them.
  for (int64_t tp = 0; tp < 2; ++tp) {
    for (int64_t dp = 0; dp < 2; ++dp) saved.push_back({"w", {6, 4}, {3 * dp, 2 * tp}, box(w, 3 * dp, 3, 2 * tp, 2)});
  }
  saved.push_back({"b", {4}, {0}, b.clone()});

  // dp=1, tp=1: whole tensors.
  std::vector<SliceRequest> whole = {{"w", {6, 4}, {0, 0}, Tensor::empty({6, 4}, DType::kF32, Device::cpu())},
                                     {"b", {4}, {0}, Tensor::empty({4}, DType::kF32, Device::cpu())}};
  ASSERT_TRUE(fill_slices("ckpt", saved, whole).ok());
  EXPECT_EQ(whole[0].out.to_vector(), w.to_vector());
  EXPECT_EQ(whole[1].out.to_vector(), b.to_vector());
  // tp=4 over columns, dp=3 over rows: rank (dp=1, tp=3) owns rows [2, 4) of column 3; it straddles
  // the saved dp split at row 3.
  std::vector<SliceRequest> odd = {{"w", {6, 4}, {2, 3}, Tensor::empty({2, 1}, DType::kF32, Device::cpu())},
                                   {"b", {4}, {1}, Tensor::empty({2}, DType::kF32, Device::cpu())}};
  ASSERT_TRUE(fill_slices("ckpt", saved, odd).ok());
  EXPECT_EQ(odd[0].out.to_vector(), box(w, 2, 2, 3, 1).to_vector());
  EXPECT_EQ(odd[1].out.to_vector(), (std::vector<double>{101, 102}));

  // A missing shard: one line naming the tensor.
  saved.erase(saved.begin() + 1);
  Status s = fill_slices("ckpt", saved, whole);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("ckpt: tensor 'w'"));
  // A model of another shape.
  saved.insert(saved.begin() + 1, TensorSlice{"w", {6, 4}, {3, 0}, box(w, 3, 3, 0, 2)});
  std::vector<SliceRequest> wrong = {{"w", {4, 6}, {0, 0}, Tensor::empty({4, 6}, DType::kF32, Device::cpu())},
                                     {"b", {4}, {0}, Tensor::empty({4}, DType::kF32, Device::cpu())}};
  EXPECT_THAT(fill_slices("ckpt", saved, wrong).message(), HasSubstr("tensor 'w' has shape [6, 4]"));
}

// N ranks in one process, one thread each: broadcast and gather through shared slots. The in-process
// stand-in for the communicator-backed RankBarrier (rank_barrier.h; exercised under mpirun by
// sharded_resume_test.cc).
class ThreadBarrier {
 public:
  explicit ThreadBarrier(int64_t world) : world_(world), slots_(world) {}
  class Rank final : public CommitBarrier {
   public:
    Rank(ThreadBarrier* b, int64_t rank) : b_(b), rank_(rank) {}
    int64_t rank() const override { return rank_; }
    int64_t world() const override { return b_->world_; }
    Vote prepare(int64_t, const Vote& rank0) override { return broadcast(rank0); }
    std::vector<Vote> report(int64_t, const Vote& mine) override {
      b_->slots_[rank_] = mine;
      b_->arrive();
      std::vector<Vote> out = rank_ == 0 ? b_->slots_ : std::vector<Vote>{};
      b_->arrive();
      return out;
    }
    Vote finish(int64_t, const Vote& rank0) override { return broadcast(rank0); }

   private:
    Vote broadcast(const Vote& value) {
      if (rank_ == 0) b_->slots_[0] = value;
      b_->arrive();
      Vote out = b_->slots_[0];
      b_->arrive();  // nobody reuses the slots before everyone read them
      return out;
    }
    ThreadBarrier* b_;
    int64_t rank_;
  };

 private:
  void arrive() {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t gen = generation_;
    if (++arrived_ == world_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }
  int64_t world_;
  std::vector<Vote> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t arrived_ = 0, generation_ = 0;
};

// Four ranks (dp=2 x tp=2) commit one checkpoint, each writing its slices of every tensor (tp splits
// dim 0 of matrices, dp splits the moments (ZeRO-1); vectors are written whole by rank 0); a one-process
// model then loads it bit for bit, and the manifest names four shards and the layout.
TEST_F(CommitTest, FourRanksCommitOneCheckpointThatLoadsIntoOneProcess) {
  std::vector<std::vector<TensorSlice>> per_rank(4);
  auto add = [&](const std::string& name, const Tensor& t) {
    const Shape g = t.shape();
    if (g.size() != 2 || g[0] % 4 != 0) {  // replicated: rank 0, whole
      per_rank[0].push_back({name, g, std::vector<int64_t>(g.size(), 0), t.detach().clone()});
      return;
    }
    for (int64_t r = 0; r < 4; ++r) {  // rank r = dp * 2 + tp owns rows [r * g0 / 4, ...)
      const int64_t rows = g[0] / 4;
      per_rank[r].push_back({name, g, {r * rows, 0}, t.detach().narrow(0, r * rows, rows).contiguous().clone()});
    }
  };
  for (const auto& p : model_->parameters()) add(p.name, p.tensor);
  for (size_t i = 0; i < opt_->params().size(); ++i) {
    // Non-zero moments, so that a mix-up of slices shows.
    Tensor m = Tensor::normal(opt_->exp_avg()[i].shape(), 0, 1, 11, i);
    Tensor v = Tensor::normal(opt_->exp_avg_sq()[i].shape(), 0, 1, 12, i);
    opt_->exp_avg()[i].copy_(m);
    opt_->exp_avg_sq()[i].copy_(v);
    add(opt_->params()[i].name + ".exp_avg", m);
    add(opt_->params()[i].name + ".exp_avg_sq", v);
  }
  Manifest m;
  m.progress.step = 9;
  m.layout = {2, 2, 1};
  m.config_yaml = "config";
  ThreadBarrier barrier(4);
  std::vector<StatusOr<std::string>> results(4, Status::Internal("not run"));
  std::vector<std::thread> ranks;
  for (int64_t r = 0; r < 4; ++r) {
    ranks.emplace_back([&, r] {
      ThreadBarrier::Rank me(&barrier, r);
      results[r] = commit_checkpoint(Env::posix(), &me, run_ + "/checkpoints", m, per_rank[r]);
    });
  }
  for (auto& t : ranks) t.join();
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::string dir = *results[0];
  auto manifest = read_manifest(dir);
  ASSERT_TRUE(manifest.ok());
  ASSERT_EQ(manifest->shards.size(), 4u);
  EXPECT_EQ(manifest->layout.dp, 2);
  EXPECT_EQ(manifest->layout.zero, 1);
  EXPECT_TRUE(verify_checkpoint(dir).ok());

  auto fresh = std::make_unique<model::DtrnModel>(tiny(), model::RoutingConfig{}, Device::cpu(), DType::kF32);
  fresh->init(77);
  std::vector<ParamGroupEntry> entries;
  for (const auto& p : fresh->parameters()) entries.push_back({p.name, p.tensor, p.decay, Tensor(), false});
  AdamW fresh_opt(entries, AdamWOptions{});
  ASSERT_TRUE(load_checkpoint(dir, fresh.get(), &fresh_opt, nullptr).ok());
  for (size_t i = 0; i < fresh_opt.params().size(); ++i) {
    EXPECT_EQ(fresh->parameters()[i].tensor.to_vector(), model_->parameters()[i].tensor.to_vector());
    EXPECT_EQ(fresh_opt.exp_avg()[i].to_vector(), opt_->exp_avg()[i].to_vector());
    EXPECT_EQ(fresh_opt.exp_avg_sq()[i].to_vector(), opt_->exp_avg_sq()[i].to_vector());
  }
}

// Two ranks commit step 1; at step 2 rank 1's shard fails to sync. Nobody commits: both ranks return the
// same one line naming rank 1 and its file, the failed save leaves nothing, and step 1 stays the newest.
TEST_F(CommitTest, OneRanksFailureStopsEveryRankFromCommitting) {
  std::vector<std::vector<TensorSlice>> per_rank(2);
  for (const auto& p : model_->parameters()) {
    per_rank[p.name < "model.layers.1" ? 0 : 1].push_back(
        {p.name, p.tensor.shape(), std::vector<int64_t>(p.tensor.shape().size(), 0), p.tensor.detach().clone()});
  }
  ASSERT_FALSE(per_rank[1].empty());
  auto commit = [&](int64_t step, FaultEnv* rank1_env) {
    Manifest m;
    m.progress.step = step;
    m.layout = {2, 1, 0};
    m.config_yaml = "config";
    ThreadBarrier barrier(2);
    std::vector<StatusOr<std::string>> results(2, Status::Internal("not run"));
    std::vector<std::thread> ranks;
    for (int64_t r = 0; r < 2; ++r) {
      ranks.emplace_back([&, r] {
        ThreadBarrier::Rank me(&barrier, r);
        Env* env = r == 1 && rank1_env ? rank1_env : Env::posix();
        results[r] = commit_checkpoint(env, &me, run_ + "/checkpoints", m, per_rank[r]);
      });
    }
    for (auto& t : ranks) t.join();
    return results;
  };
  for (const auto& r : commit(1, nullptr)) ASSERT_TRUE(r.ok()) << r.status().ToString();
  FaultEnv env(Env::posix());
  env.arm(Fault::kSyncFails, "shard-00001-of-00002");
  const auto failed = commit(2, &env);
  EXPECT_EQ(env.armed(), 0u) << "the fault never fired";
  ASSERT_FALSE(failed[0].ok());
  ASSERT_FALSE(failed[1].ok());
  EXPECT_EQ(failed[0].status().message(), failed[1].status().message());
  EXPECT_THAT(failed[0].status().message(), HasSubstr("rank 1 could not write its shard: "));
  EXPECT_THAT(failed[0].status().message(), HasSubstr("shard-00001-of-00002."));
  EXPECT_THAT(failed[0].status().message(), HasSubstr("fsync: Input/output error"));
  EXPECT_EQ(failed[0].status().message().find('\n'), std::string::npos);
  EXPECT_FALSE(fs::exists(run_ + "/checkpoints/step-00000002"));
  EXPECT_EQ(resolve_checkpoint(run_).value(), run_ + "/checkpoints/step-00000001");
  EXPECT_TRUE(verify_checkpoint(run_ + "/checkpoints/step-00000001").ok());
}

}  // namespace
}  // namespace dtrn::train
