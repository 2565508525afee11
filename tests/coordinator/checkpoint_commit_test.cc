// Checkpoints committed through the coordinator (Note [Commit through the coordinator] in
// coordinator/src/checkpoint_reports.cc), against a real `dtrn coordinator` on loopback:
//   - a dp=2 job run by an agent commits every checkpoint through the coordinator's reports (its
//     metrics count them), and the checkpoint verifies and resumes;
//   - two ranks in this process commit through CoordinatorBarrier: a save commits, and a rank whose
//     shard fails to sync (FaultEnv) makes the save abandoned on both ranks in one line, the
//     previous checkpoint still the newest valid one;
//   - a coordinator restarted during a save rebuilds it from the ranks' repeated reports;
//   - forged reports (another job, generation or rank) are refused and change nothing;
//   - an abandoned barrier (the run ends mid-save) stops waiting for the coordinator.
#include <gmock/gmock.h>

#include <atomic>
#include <thread>

#include "checkpoint_commit.h"
#include "cluster.h"
#include "dtrn/coordinator/coordinator_barrier.h"
#include "dtrn/train/checkpoint.h"
#include "fault_env.h"

namespace dtrn::coordinator::testing {
namespace {

using ::testing::HasSubstr;

// The cluster tests' tiny job on two DP ranks; with ZeRO-1 each rank saves its own shard of the
// moments.
std::string dp2_config(const std::string& one_rank_yaml, int zero = 0) {
  std::string yaml = one_rank_yaml;
  const std::string one = "global_batch: 1";
  yaml.replace(yaml.find(one), one.size(), "global_batch: 2");
  return yaml + "parallel: {dp: 2, zero: " + std::to_string(zero) + ", timeout_s: 60}\n";
}

class CheckpointCommitTest : public ClusterTest {
 protected:
  void TearDown() override {
    keep_alive_ = false;
    if (keeper_.joinable()) keeper_.join();
    ClusterTest::TearDown();
  }

  std::string job_log(const std::string& id) {
    return slurp(dir("state") + "/jobs/" + id + ".log");
  }
  double counter(const std::string& name, const std::string& id, const std::string& label) {
    const double v = metric(name + "{job=\"" + id + "\"," + label + "}");
    return std::isnan(v) ? 0 : v;
  }

  // Plays the agent of a dp=2 job: registers, takes both ranks' launches (their identities), and
  // keeps the agent and both ranks alive (polls and heartbeats) until the test ends.
  void start_job_as_agent() {
    port_ = start_coordinator();
    auto agents = v1::Agents::NewStub(*make_channel(client_));
    v1::RegisterAgentRequest reg;
    reg.set_host("test-host");
    reg.set_slots(2);
    v1::RegisterAgentResponse agent;
    {
      grpc::ClientContext c;
      prepare_context(&c, client_, 5);
      ASSERT_TRUE(agents->RegisterAgent(&c, reg, &agent).ok());
    }
    job_ = submit_config(dp2_config(job_config(10)), dir("run"));
    std::vector<v1::ProcessReport> running;
    const auto poll = [&] {
      v1::AgentPollRequest r;
      r.set_agent_id(agent.agent_id());
      for (const auto& p : running) *r.add_processes() = p;
      v1::AgentPollResponse resp;
      grpc::ClientContext c;
      prepare_context(&c, client_, 5);
      EXPECT_TRUE(agents->AgentPoll(&c, r, &resp).ok());
      for (const auto& l : resp.launch()) {
        refs_[l.worker().rank()] = l.worker();
        v1::ProcessReport p;
        *p.mutable_worker() = l.worker();
        p.set_running(true);
        p.set_pid(::getpid());
        p.set_master_port(1);  // rank 0's "port": releases rank 1's launch
        running.push_back(p);
      }
    };
    ASSERT_TRUE(eventually(
        [&] {
          poll();
          return running.size() == 2;
        },
        10));
    keeper_ = std::thread([this, agents = std::move(agents), running, id = agent.agent_id()] {
      auto workers = this->workers();
      while (keep_alive_) {
        v1::AgentPollRequest r;
        r.set_agent_id(id);
        for (const auto& p : running) *r.add_processes() = p;
        v1::AgentPollResponse resp;
        grpc::ClientContext c;
        prepare_context(&c, client_, 2);
        (void)agents->AgentPoll(&c, r, &resp);
        for (const auto& ref : refs_) {
          v1::HeartbeatRequest h;
          *h.mutable_worker() = ref;
          h.set_phase("train");
          v1::HeartbeatResponse hr;
          grpc::ClientContext hc;
          prepare_context(&hc, client_, 2);
          (void)workers->Heartbeat(&hc, h, &hr);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
      }
    });
  }

  // Both ranks commit a save of `step` through CoordinatorBarrier, each on its own thread; rank 1
  // writes through `rank1_env` when given. Rank 0 owns "a", rank 1 owns "b".
  std::vector<StatusOr<std::string>> commit(int64_t step, train::Env* rank1_env) {
    train::Manifest m;
    m.progress.step = step;
    m.layout = {2, 1, 0};
    m.config_yaml = "config";
    std::vector<StatusOr<std::string>> results(2, Status::Internal("not run"));
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r) {
      ranks.emplace_back([&, r] {
        CoordinatorBarrier barrier(WorkerIdentity{client_, refs_[r], "test-host"},
                                   *make_channel(client_), 2);
        const std::vector<train::TensorSlice> mine = {
            {r == 0 ? "a" : "b", {4}, {0}, Tensor::full({4}, 1.5 + r + step, DType::kF32)}};
        train::Env* env = r == 1 && rank1_env ? rank1_env : train::Env::posix();
        results[r] = train::commit_checkpoint(env, &barrier, dir("run") + "/checkpoints", m, mine);
      });
    }
    for (auto& t : ranks) t.join();
    return results;
  }

  // A successful report of the save of step `step` (7 unless given), as the worker `ref`.
  grpc::Status report_as(const v1::WorkerRef& ref, v1::CommitPhase phase,
                         const std::string& save_id, const std::string& detail,
                         v1::ShardReportResponse* resp, int64_t step = 7) {
    v1::ShardReport r;
    *r.mutable_worker() = ref;
    r.set_step(step);
    r.set_phase(phase);
    r.set_save_id(save_id);
    r.set_ok(true);
    r.set_detail(detail);
    grpc::ClientContext c;
    prepare_context(&c, client_, 5);
    return workers()->ReportShard(&c, r, resp);
  }

  int port_ = 0;
  std::string job_;
  v1::WorkerRef refs_[2];
  std::atomic<bool> keep_alive_{true};
  std::thread keeper_;
};

TEST_F(CheckpointCommitTest, ADpTwoJobCommitsEveryCheckpointThroughTheCoordinatorAndResumes) {
  start_coordinator();
  start_agent({"--slots", "2"});
  const std::string run = dir("run");
  const std::string id = submit_config(dp2_config(job_config(10), 1), run);
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120))
      << get(id).DebugString() << coordinator_->output();
  // Two saves (steps 5 and 10), each: rank 0's PREPARE and COMMIT, both ranks' SHARD reports.
  EXPECT_EQ(counter("dtrn_checkpoint_saves_total", id, "outcome=\"committed\""), 2);
  EXPECT_EQ(counter("dtrn_checkpoint_saves_total", id, "outcome=\"abandoned\""), 0);
  EXPECT_EQ(counter("dtrn_checkpoint_reports_total", id, "phase=\"prepare\""), 2);
  EXPECT_EQ(counter("dtrn_checkpoint_reports_total", id, "phase=\"shard\""), 4);
  EXPECT_EQ(counter("dtrn_checkpoint_reports_total", id, "phase=\"commit\""), 2);
  EXPECT_EQ(get(id).checkpoint_step(), 10);
  // What the newest save cost reaches the coordinator's metrics from rank 0's heartbeat: the figures of
  // its metrics.jsonl line, in seconds.
  double blocked_ms = -1, write_ms = -1;
  for (const auto& l : read_metrics(run)) {
    if (l["kind"] == "checkpoint" && l["step"] == 10) {
      blocked_ms = l["blocked_ms"];
      write_ms = l["write_ms"];
    }
  }
  ASSERT_GE(blocked_ms, 0);
  ASSERT_GT(write_ms, 0);
  const std::string series = "{job=\"" + id + "\",rank=\"0\"}";
  EXPECT_NEAR(metric("dtrn_checkpoint_blocked_seconds" + series), blocked_ms / 1000, 1e-6 + 1e-5 * blocked_ms / 1000);
  EXPECT_NEAR(metric("dtrn_checkpoint_write_seconds" + series), write_ms / 1000, 1e-6 + 1e-5 * write_ms / 1000);
  EXPECT_THAT(job_log(id),
              HasSubstr("checkpoint of step 5 committed (the reports of its 2 ranks agreed)"));
  EXPECT_THAT(job_log(id),
              HasSubstr("checkpoint of step 10 committed (the reports of its 2 ranks agreed)"));
  // The checkpoint verifies, names both ranks' shards, and resumes (in one process, to step 12).
  const CommandResult verify =
      run_command({kDtrn, "ckpt", "verify", run + "/checkpoints/step-00000010"});
  EXPECT_EQ(verify.code, 0) << verify.output;
  auto manifest = train::read_manifest(run + "/checkpoints/step-00000010");
  ASSERT_TRUE(manifest.ok()) << manifest.status().message();
  EXPECT_EQ(manifest->shards.size(), 2u);
  const CommandResult resumed =
      run_command({kDtrn, "train", "--resume", "--run-dir", run, "--set", "train.steps=12", "--set",
                   "parallel.dp=1", "--set", "parallel.zero=0", "--quiet"});
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  int64_t last = 0;
  for (const auto& l : metrics_without_timing(run)) {
    if (l["kind"] == "train") last = l["step"];
  }
  EXPECT_EQ(last, 12);
}

TEST_F(CheckpointCommitTest, AFailedShardAbandonsTheSaveOnEveryRankAndKeepsThePreviousCheckpoint) {
  ASSERT_NO_FATAL_FAILURE(start_job_as_agent());
  for (const auto& r : commit(5, nullptr)) ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::string five = dir("run") + "/checkpoints/step-00000005";
  EXPECT_TRUE(train::verify_checkpoint(five).ok());
  EXPECT_EQ(get(job_).checkpoint_step(), 5);
  EXPECT_EQ(counter("dtrn_checkpoint_saves_total", job_, "outcome=\"committed\""), 1);

  train::FaultEnv env(train::Env::posix());
  env.arm(train::Fault::kSyncFails, "shard-00001-of-00002");
  const auto failed = commit(10, &env);
  EXPECT_EQ(env.armed(), 0u) << "the fault never fired";
  ASSERT_FALSE(failed[0].ok());
  ASSERT_FALSE(failed[1].ok());
  EXPECT_EQ(failed[0].status().message(), failed[1].status().message());
  EXPECT_THAT(failed[0].status().message(), HasSubstr("rank 1 could not write its shard: "));
  EXPECT_THAT(failed[0].status().message(), HasSubstr("fsync: Input/output error"));
  EXPECT_EQ(failed[0].status().message().find('\n'), std::string::npos);
  EXPECT_FALSE(fs::exists(dir("run") + "/checkpoints/step-00000010"));
  EXPECT_EQ(train::resolve_checkpoint(dir("run")).value(), five);
  EXPECT_TRUE(train::verify_checkpoint(five).ok());
  // The coordinator saw it too: the job's checkpoint is still step 5.
  EXPECT_EQ(get(job_).checkpoint_step(), 5);
  EXPECT_EQ(counter("dtrn_checkpoint_saves_total", job_, "outcome=\"abandoned\""), 1);
  EXPECT_THAT(job_log(job_),
              HasSubstr("checkpoint of step 10 abandoned: rank 1 could not write its shard: "));
}

TEST_F(CheckpointCommitTest, ForgedReportsAreRefusedAndChangeNothing) {
  ASSERT_NO_FATAL_FAILURE(start_job_as_agent());
  v1::ShardReportResponse resp;
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_PREPARE, "s1", "", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(resp.save_id(), "s1");
  const double denied = metric("dtrn_rpc_rejected_total{reason=\"permission_denied\"}");

  // Rank 1's vote, forged four ways.
  v1::WorkerRef other_job = refs_[1], other_generation = refs_[1], stolen_secret = refs_[1],
                no_rank = refs_[1];
  other_job.set_job_id("job-999999");
  other_generation.set_generation(refs_[1].generation() + 1);
  stolen_secret.set_secret(refs_[0].secret());
  no_rank.set_rank(2);
  for (const auto& forged : {other_job, other_generation, stolen_secret, no_rank}) {
    const grpc::Status s = report_as(forged, v1::COMMIT_PHASE_SHARD, "s1", "{}", &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << forged.DebugString();
  }
  EXPECT_EQ(metric("dtrn_rpc_rejected_total{reason=\"permission_denied\"}"), denied + 4);
  const grpc::Status too_long =
      report_as(refs_[1], v1::COMMIT_PHASE_SHARD, "s1", std::string(17 << 10, 'x'), &resp);
  EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A heartbeat whose save figures are not a duration is refused, naming the fields.
  v1::HeartbeatRequest h;
  *h.mutable_worker() = refs_[1];
  h.set_checkpoint_step(5);
  h.set_checkpoint_blocked_ms(std::nan(""));
  v1::HeartbeatResponse hr;
  grpc::ClientContext hc;
  prepare_context(&hc, client_, 5);
  const grpc::Status bad_heartbeat = workers()->Heartbeat(&hc, h, &hr);
  EXPECT_EQ(bad_heartbeat.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad_heartbeat.error_message(), HasSubstr("checkpoint_blocked_ms"));

  // None of them voted: rank 0's own vote still waits for rank 1's (PENDING after the coordinator's
  // wait).
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_SHARD, "s1", "{}", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_PENDING);
  EXPECT_EQ(counter("dtrn_checkpoint_reports_total", job_, "phase=\"shard\""), 1);
  // Rank 1's real vote decides the save; rank 0 then gets both votes.
  ASSERT_TRUE(report_as(refs_[1], v1::COMMIT_PHASE_SHARD, "s1", "{}", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(resp.votes_size(), 0) << "only rank 0 gets the votes";
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_SHARD, "s1", "{}", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(resp.votes_size(), 2);
  EXPECT_EQ(counter("dtrn_checkpoint_reports_total", job_, "phase=\"shard\""), 2)
      << "a repeated vote counts once";
}

// The coordinator is killed during a save, twice: the new one (same state directory and port) holds
// no record of the save, adopts it from the first SHARD or COMMIT report, and the ranks' repeated
// reports decide and commit it as if nothing happened.
TEST_F(CheckpointCommitTest, ACoordinatorRestartedDuringASaveRebuildsItFromTheRanksReports) {
  ASSERT_NO_FATAL_FAILURE(start_job_as_agent());
  v1::ShardReportResponse resp;
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_PREPARE, "s1", "", &resp).ok());
  ASSERT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  coordinator_->kill(SIGKILL);
  start_coordinator({}, port_);
  ASSERT_TRUE(eventually([&] { return get(job_).state() == v1::JOB_STATE_RUNNING; }, 10));
  // Rank 1, waiting for the save id, waits on: the new coordinator has not heard of the save.
  ASSERT_TRUE(report_as(refs_[1], v1::COMMIT_PHASE_PREPARE, "", "", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_PENDING);
  // Rank 0's vote adopts the save (it waits for rank 1's); rank 1 then gets the id and votes.
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_SHARD, "s1", "{}", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_PENDING);
  ASSERT_TRUE(report_as(refs_[1], v1::COMMIT_PHASE_PREPARE, "", "", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(resp.save_id(), "s1");
  ASSERT_TRUE(report_as(refs_[1], v1::COMMIT_PHASE_SHARD, "s1", "{}", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_SHARD, "s1", "{}", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(resp.votes_size(), 2);
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_COMMIT, "s1", "", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  ASSERT_TRUE(report_as(refs_[1], v1::COMMIT_PHASE_COMMIT, "s1", "", &resp).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(get(job_).checkpoint_step(), 7);
  EXPECT_EQ(counter("dtrn_checkpoint_saves_total", job_, "outcome=\"committed\""), 1);
  EXPECT_THAT(job_log(job_), HasSubstr("checkpoint of step 7 committed"));

  // The save of step 9: the SHARD phase is decided, rank 1 learns it and moves on to wait for rank
  // 0's COMMIT, and the coordinator dies before rank 0 learns it. Rank 1's COMMIT report repeats
  // its vote, so rank 0's repeated vote decides the phase again on the new coordinator.
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_PREPARE, "s2", "", &resp, 9).ok());
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_SHARD, "s2", "{}", &resp, 9).ok());
  ASSERT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_PENDING);
  ASSERT_TRUE(report_as(refs_[1], v1::COMMIT_PHASE_SHARD, "s2", "{}", &resp, 9).ok());
  ASSERT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  coordinator_->kill(SIGKILL);
  start_coordinator({}, port_);
  ASSERT_TRUE(eventually([&] { return get(job_).state() == v1::JOB_STATE_RUNNING; }, 10));
  const grpc::Status waiting = report_as(refs_[1], v1::COMMIT_PHASE_COMMIT, "s2", "{}", &resp, 9);
  ASSERT_TRUE(waiting.ok()) << describe(waiting);
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_PENDING);
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_SHARD, "s2", "{}", &resp, 9).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(resp.votes_size(), 2);
  ASSERT_TRUE(report_as(refs_[0], v1::COMMIT_PHASE_COMMIT, "s2", "", &resp, 9).ok());
  ASSERT_TRUE(report_as(refs_[1], v1::COMMIT_PHASE_COMMIT, "s2", "{}", &resp, 9).ok());
  EXPECT_EQ(resp.outcome(), v1::COMMIT_OUTCOME_AGREED);
  EXPECT_EQ(get(job_).checkpoint_step(), 9);
}

// A writer whose run ends mid-save (AsyncCheckpointWriter's destructor) abandons its barrier: rank
// 1, waiting for a save id rank 0 never sends, stops within one of the coordinator's waits (1 s).
TEST_F(CheckpointCommitTest, AnAbandonedBarrierStopsWaitingForTheCoordinator) {
  ASSERT_NO_FATAL_FAILURE(start_job_as_agent());
  CoordinatorBarrier barrier(WorkerIdentity{client_, refs_[1], "test-host"}, *make_channel(client_),
                             2);
  std::string error;
  std::thread writer([&] {
    try {
      barrier.prepare(7, {});
    } catch (const Error& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto abandoned_at = std::chrono::steady_clock::now();
  barrier.abandon();
  writer.join();
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - abandoned_at).count();
  EXPECT_THAT(error, HasSubstr("stopped serving the checkpoint commit"));
  EXPECT_LT(s, 1.0 + 1.0) << "one wait of the coordinator, plus 1 s for a busy 2-core machine";
}

}  // namespace
}  // namespace dtrn::coordinator::testing
