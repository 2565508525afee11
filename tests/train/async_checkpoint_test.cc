// The background writer of a multi-rank job (async_checkpoint.h with rank_barrier.h), in one process over
// the single-process communicator: the commit's barrier calls are carried out only in the training
// thread's rounds, the save commits once rounds are served, and a writer destroyed while its commit waits
// for rounds is abandoned (no hang, no manifest). Under mpirun the same path runs in
// sharded_resume_test.cc.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "async_checkpoint.h"
#include "checkpoint_format.h"
#include "dtrn/parallel/communicator.h"
#include "tiny_model.h"

namespace dtrn::train {
namespace {

namespace fs = std::filesystem;

class AsyncWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dtrn_async_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    run_ = tmpl;
    model_ = std::make_unique<model::DtrnModel>(tiny_model(2, "TD"), model::RoutingConfig{}, Device::cpu(),
                                                DType::kF32);
    model_->init(1);
    std::vector<ParamGroupEntry> entries;
    for (const auto& p : model_->parameters()) entries.push_back({p.name, p.tensor, p.decay, Tensor()});
    opt_ = std::make_unique<AdamW>(entries, AdamWOptions{});
  }
  void TearDown() override { fs::remove_all(run_); }

  std::shared_ptr<const CheckpointSnapshot> snapshot(int64_t step) {
    TrainProgress p;
    p.step = step;
    auto s = snapshot_checkpoint(*model_, optimizer_state(*opt_), RankPlace{}, p, "config");
    EXPECT_TRUE(s.ok()) << s.status().message();
    return *s;
  }

  std::string run_;
  std::unique_ptr<model::DtrnModel> model_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<parallel::Communicator> world_ = parallel::make_single_process_communicator();
};

TEST_F(AsyncWriterTest, TheCommitAdvancesOnlyInRoundsAndThenJoins) {
  RankBarrier ranks(*world_);
  AsyncCheckpointWriter writer(run_, SaveOptions{0, 0, nullptr, &ranks}, &ranks);
  writer.start(snapshot(3), 3);
  // Without rounds the writer waits in its first barrier call: the step folder exists at most, uncommitted.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(fs::exists(run_ + "/checkpoints/step-00000003/" + kManifestFile));
  std::optional<AsyncCheckpointWriter::Done> done;
  int rounds = 0;
  for (; !done && rounds < 10000; ++rounds) {
    done = writer.poll();
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(done.has_value());
  EXPECT_GE(rounds, 3) << "the id, the reports and the outcome each need a round";
  ASSERT_TRUE(done->dir.ok()) << done->dir.status().message();
  EXPECT_EQ(*done->dir, run_ + "/checkpoints/step-00000003");
  EXPECT_TRUE(verify_checkpoint(*done->dir).ok());
  EXPECT_FALSE(writer.poll().has_value());  // joined: nothing in flight
}

TEST_F(AsyncWriterTest, AWriterWhoseRoundsStopIsAbandonedWithoutACommit) {
  RankBarrier ranks(*world_);
  {
    AsyncCheckpointWriter writer(run_, SaveOptions{0, 0, nullptr, &ranks}, &ranks);
    writer.start(snapshot(4), 4);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }  // destroyed with the commit waiting for a round: must return
  EXPECT_FALSE(fs::exists(run_ + "/checkpoints/step-00000004/" + kManifestFile));
  std::vector<std::string> removed;
  ASSERT_TRUE(clean_checkpoints(run_, &removed).ok());
  EXPECT_FALSE(fs::exists(run_ + "/checkpoints/step-00000004"));
}

}  // namespace
}  // namespace dtrn::train
