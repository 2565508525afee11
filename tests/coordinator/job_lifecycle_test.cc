// Jobs through a real coordinator, agent and `dtrn train` workers on loopback: the same metrics as a
// direct run, failure detection (a killed worker, a silent one), restarts from the last checkpoint, and a
// coordinator killed and restarted on its state directory.
#include <signal.h>

#include <cmath>

#include "cluster.h"

namespace dtrn::coordinator::testing {
namespace {

using JobLifecycleTest = ClusterTest;

TEST_F(JobLifecycleTest, JobThroughCoordinatorGivesTheMetricsOfADirectRun) {
  start_coordinator();
  start_agent();
  const std::string run = dir("run");
  const std::string id = submit(20, run);
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120)) << get(id).DebugString() << coordinator_->output();
  EXPECT_EQ(metrics_without_timing(run), metrics_without_timing(root_ + "/direct"));
  // The exported series carry what the worker wrote: the last step and its D layer's routed fraction.
  const auto lines = metrics_without_timing(run);
  nlohmann::json last_train;
  for (const auto& l : lines) if (l["kind"] == "train") last_train = l;
  EXPECT_EQ(metric("dtrn_job_step{job=\"" + id + "\"}"), 20);
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction{job=\"" + id + "\",layer=\"1\"}"),
                   last_train["layers"][0]["f"].get<double>());
  EXPECT_DOUBLE_EQ(metric("dtrn_train_loss{job=\"" + id + "\"}"), last_train["loss"].get<double>());
  EXPECT_EQ(metric("dtrn_job_state{job=\"" + id + "\",state=\"succeeded\"}"), 1);
  EXPECT_EQ(get(id).checkpoint_step(), 20);
}

TEST_F(JobLifecycleTest, KilledWorkerIsNamedAndTheJobResumesFromItsCheckpoint) {
  start_coordinator();
  start_agent();
  const std::string run = dir("run");
  const std::string id = submit(20, run);
  ASSERT_TRUE(eventually([&] { auto j = get(id); return j.checkpoint_step() >= 5 && j.step() >= 7; }, 120));
  const v1::Job before = get(id);
  ASSERT_EQ(before.workers_size(), 1);
  const int pid = before.workers(0).pid();
  ASSERT_GT(pid, 0);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(eventually([&] { return get(id).state() != v1::JOB_STATE_RUNNING; }, 10));
  const double detected_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  const v1::Job failed = get(id);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_RESTARTING);
  EXPECT_NE(failed.message().find("rank 0 on test-host was killed by signal 9"), std::string::npos) << failed.message();
  EXPECT_NE(failed.message().find("last step"), std::string::npos) << failed.message();
  // Training again: generation 2 reports a step past the checkpoint it resumed from.
  ASSERT_TRUE(eventually([&] { auto j = get(id); return j.generation() == 2 && j.step() > j.checkpoint_step(); }, 60))
      << get(id).DebugString();
  const double training_again_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  std::printf("[ measured ] kill -9 of the worker: detected after %.2f s, training again after %.2f s "
              "(back-off 0.5 s, heartbeat timeout 3 s)\n", detected_s, training_again_s);
  EXPECT_LT(detected_s, 3.0);  // the agent's exit report, well inside the heartbeat timeout
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120)) << get(id).DebugString();
  EXPECT_EQ(get(id).restarts(), 1);
  // A resumed run appends exactly the lines an uninterrupted run writes (trainer.h).
  EXPECT_EQ(metrics_without_timing(run), metrics_without_timing(root_ + "/direct"));
  EXPECT_EQ(metric("dtrn_job_restarts_total{job=\"" + id + "\"}"), 1);
}

TEST_F(JobLifecycleTest, SilentWorkerFailsByHeartbeatTimeoutNamingItsStepAndPhase) {
  start_coordinator();
  start_agent();
  const std::string id = submit(20, dir("run"), /*max_restarts=*/0);
  ASSERT_TRUE(eventually([&] { return get(id).step() >= 3; }, 120));
  const int pid = get(id).workers(0).pid();
  const auto stopped_at = std::chrono::steady_clock::now();
  ::kill(pid, SIGSTOP);  // alive but silent: only the heartbeat timeout can tell
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_FAILED, 15)) << get(id).DebugString();
  const double detected_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  const v1::Job job = get(id);
  EXPECT_NE(job.message().find("rank 0 on test-host missed heartbeats"), std::string::npos) << job.message();
  // Stopped while training or while starting a checkpoint (step 5's save): either phase is named.
  EXPECT_TRUE(job.message().find("phase train)") != std::string::npos ||
              job.message().find("phase checkpoint)") != std::string::npos)
      << job.message();
  EXPECT_NE(job.message().find("no restarts left"), std::string::npos) << job.message();
  // The timeout runs from the last heartbeat, sent at most 1 s (the heartbeat period) before SIGSTOP;
  // the coordinator checks every 0.2 s. So 3 - 1 <= detected <= 3 + 0.2, with 1 s for a busy 2-core CI
  // machine (this test polls GetJob every 50 ms too).
  EXPECT_GE(detected_s, 2.0 - 0.1);
  EXPECT_LT(detected_s, 3.2 + 1.0);
  ::kill(pid, SIGCONT);
}

// A rank that stays silent across a coordinator restart is failed, after two heartbeat timeouts from
// the restart (Note [Reconnecting ranks] in coordinator.cc): one would fail healthy ranks whose channels
// are still backing off.
TEST_F(JobLifecycleTest, ARankSilentAcrossACoordinatorRestartFailsAfterTwoTimeouts) {
  const int port = start_coordinator();
  start_agent();
  const std::string id = submit(20, dir("run"), /*max_restarts=*/0);
  ASSERT_TRUE(eventually([&] { return get(id).step() >= 3; }, 120));
  const int pid = get(id).workers(0).pid();
  ::kill(pid, SIGSTOP);
  coordinator_->kill(SIGKILL);
  start_coordinator({}, port);
  const auto restarted_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_FAILED, 20)) << get(id).DebugString();
  const double detected_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted_at).count();
  EXPECT_NE(get(id).message().find("rank 0 on test-host missed heartbeats"), std::string::npos)
      << get(id).message();
  // Two timeouts of 3 s from the recovery (just before start_coordinator returned), checked every 0.2 s,
  // with 1 s for a busy machine.
  EXPECT_GE(detected_s, 6.0 - 0.5);
  EXPECT_LT(detected_s, 6.2 + 1.0);
  ::kill(pid, SIGCONT);
}

TEST_F(JobLifecycleTest, CoordinatorKilledAndRestartedOnItsStateDirKeepsTheJob) {
  const int port = start_coordinator();
  start_agent();
  const std::string run = dir("run");
  const std::string id = submit(20, run);
  ASSERT_TRUE(eventually([&] { return get(id).checkpoint_step() >= 5; }, 120));
  const int64_t committed = get(id).checkpoint_step();
  // The worker is held while the coordinator is away, so that it is still training when the new one
  // comes up (a 20-step job can otherwise finish in the gap, and then there is no live worker to adopt).
  const int pid = get(id).workers(0).pid();
  ::kill(pid, SIGSTOP);
  coordinator_->kill(SIGKILL);
  start_coordinator({}, port);  // same state directory, same address: agent and worker reconnect
  ::kill(pid, SIGCONT);
  EXPECT_GE(get(id).checkpoint_step(), committed);  // nothing committed is forgotten
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120)) << get(id).DebugString() << coordinator_->output();
  const v1::Job job = get(id);
  EXPECT_EQ(job.generation(), 1) << "the live worker should have been adopted, not restarted";
  EXPECT_EQ(job.checkpoint_step(), 20);
  EXPECT_EQ(metrics_without_timing(run), metrics_without_timing(root_ + "/direct"));
}

}  // namespace
}  // namespace dtrn::coordinator::testing

namespace dtrn::coordinator::testing {
namespace {

TEST_F(JobLifecycleTest, LaunchRunsAJobThroughAnEmbeddedCoordinatorAndAgent) {
  const std::string run = dir("run");
  const CommandResult r = run_command({kDtrn, "launch", "--config", job_yaml(20), "--nproc", "1", "--run-dir", run,
                                       "--state-dir", dir("state")});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("launch: dashboard http://127.0.0.1:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("launch: live view: dtrn top --coordinator 127.0.0.1:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("job job-000001 succeeded"), std::string::npos) << r.output;
  EXPECT_EQ(metrics_without_timing(run), metrics_without_timing(root_ + "/direct"));
}

TEST_F(JobLifecycleTest, LaunchRefusesFewerSlotsThanRanks) {
  const CommandResult r = run_command({kDtrn, "launch", "--config", job_yaml(20), "--nproc", "1", "--set",
                                       "parallel.dp=2", "--set", "train.global_batch=2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("--nproc 1 is fewer than the job's dp x tp = 2 ranks"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace dtrn::coordinator::testing

namespace dtrn::coordinator::testing {
namespace {

TEST_F(JobLifecycleTest, LostAgentFailsItsWorkersAndANewAgentResumesTheJob) {
  start_coordinator();
  start_agent();
  const std::string run = dir("run");
  const std::string id = submit(20, run);
  ASSERT_TRUE(eventually([&] { return get(id).checkpoint_step() >= 5; }, 120));
  const int worker = get(id).workers(0).pid();
  agent_->kill(SIGKILL);  // the host is gone: its worker dies with it (PR_SET_PDEATHSIG)
  EXPECT_TRUE(eventually([&] { return ::kill(worker, 0) != 0; }, 5)) << "the worker outlived its agent";
  // The agent's silence (3 s) fails its rank; with no agent left the job waits for slots.
  ASSERT_TRUE(eventually([&] { return get(id).state() == v1::JOB_STATE_RESTARTING; }, 10)) << get(id).DebugString();
  EXPECT_NE(get(id).message().find("lost its agent"), std::string::npos) << get(id).message();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // past the 0.5 s back-off: still no slots
  EXPECT_EQ(get(id).state(), v1::JOB_STATE_RESTARTING);
  start_agent();
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120)) << get(id).DebugString();
  EXPECT_EQ(get(id).generation(), 2);
  EXPECT_EQ(metrics_without_timing(run), metrics_without_timing(root_ + "/direct"));
}

}  // namespace
}  // namespace dtrn::coordinator::testing
