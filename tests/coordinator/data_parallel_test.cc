// Data-parallel jobs through a real coordinator, agent and two `dtrn train` workers on loopback:
// the agent starts the ranks with torchrun's variables (Note [Rendezvous] in coordinator.cc) and
// they form one DP group over the TCP communicator, on one agent or across two (rank 1 then reaches
// rank 0 by its agent's host name, as on separate hosts). References, computed in each test:
//   - the same dp=2 job under `mpirun -np 2` (Open MPI's collectives): with 2 ranks every
//   all-reduce is
//     a + b on both communicators, so metrics.jsonl must be identical, timing and checkpoint lines
//     aside;
//   - one process over the same global batch: the tolerance of the DP tests (tests/train/
//     parallel_training_test.cc): loss and gradient norm within 1e-3, every layer's routed fraction
//     and fallback identical (only the order of the gradient sums differs).
#include <signal.h>

#include <cmath>

#include "cluster.h"

namespace dtrn::coordinator::testing {
namespace {

class DataParallelTest : public ClusterTest {
 protected:
  // The cluster tests' tiny job with two ranks of one micro-batch each: a global batch of 2.
  static std::string dp2_config(int steps) {
    std::string yaml = job_config(steps);
    const std::string one = "global_batch: 1";
    yaml.replace(yaml.find(one), one.size(), "global_batch: 2");
    return yaml + "parallel: {dp: 2, timeout_s: 60}\n";
  }
  std::string write_config(const std::string& yaml) {
    const std::string path = dir("job.yaml");
    std::ofstream(path) << yaml;
    return path;
  }
  // The same job in one process (dp 1, the same global batch).
  std::string one_process_run(int steps) {
    std::string yaml = dp2_config(steps);
    yaml.replace(yaml.find("dp: 2"), 5, "dp: 1");
    const std::string run = dir("one-process");
    const CommandResult r =
        run_command({kDtrn, "train", "--config", write_config(yaml), "--run-dir", run, "--quiet"});
    EXPECT_EQ(r.code, 0) << r.output;
    return run;
  }
  // The same dp=2 job under mpirun; empty when this build found no mpirun.
  std::string mpirun_run(int steps) {
    if (std::string(DTRN_MPIEXEC).empty()) return "";
    const std::string run = dir("mpirun");
    const std::string cmd =
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " +
        std::string(DTRN_MPIEXEC) + " -np 2 --oversubscribe " + kDtrn + " train --config " +
        write_config(dp2_config(steps)) + " --run-dir " + run + " --quiet > " + run + ".log 2>&1";
    const int status = std::system(cmd.c_str());
    EXPECT_EQ(status, 0) << slurp(run + ".log");
    return run;
  }

  static void expect_dp_tolerance(const std::string& dp_run, const std::string& one_run) {
    const auto a = metrics_without_timing(dp_run), b = metrics_without_timing(one_run);
    ASSERT_EQ(a.size(), b.size());
    ASSERT_FALSE(a.empty());
    for (size_t i = 0; i < a.size(); ++i) {
      SCOPED_TRACE("line " + std::to_string(i + 1) + " " + a[i].dump());
      ASSERT_EQ(a[i]["kind"], b[i]["kind"]);
      EXPECT_EQ(a[i]["step"], b[i]["step"]);
      EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 1e-3);
      if (a[i]["kind"] != "train") continue;
      EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), 1e-3);
      ASSERT_EQ(a[i]["layers"].size(), b[i]["layers"].size());
      for (size_t l = 0; l < a[i]["layers"].size(); ++l) {
        EXPECT_EQ(a[i]["layers"][l]["f"], b[i]["layers"][l]["f"]);
        EXPECT_EQ(a[i]["layers"][l]["fallback"], b[i]["layers"][l]["fallback"]);
      }
    }
  }
};

TEST_F(DataParallelTest, LaunchTrainsDpTwoLikeMpirunAndLikeOneProcess) {
  const std::string run = dir("launch");
  // One thread per worker, as the mpirun reference runs (the agent keeps an OMP_NUM_THREADS it was
  // given), so that no kernel's split over threads can tell the two apart.
  Child launch({kDtrn, "launch", "--config", write_config(dp2_config(20)), "--nproc", "2",
                "--run-dir", run, "--state-dir", dir("state")},
               dir("launch.log"), {{"OMP_NUM_THREADS", "1"}});
  CommandResult r;
  r.code = launch.wait();
  r.output = launch.output();
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("agent: started worker job-000001/1/1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("job job-000001 succeeded"), std::string::npos) << r.output;
  // Its checkpoints were committed through the coordinator (docs/checkpoints.md).
  for (const char* step : {"5", "10", "15", "20"}) {
    EXPECT_NE(r.output.find(std::string("checkpoint of step ") + step +
                            " committed (the reports of its 2 ranks agreed)"),
              std::string::npos)
        << r.output;
  }
  const std::string mpirun = mpirun_run(20);
  if (!mpirun.empty()) {
    EXPECT_EQ(metrics_without_timing(run), metrics_without_timing(mpirun));
  }
  expect_dp_tolerance(run, one_process_run(20));
}

TEST_F(DataParallelTest, RankZeroStreamsTheJobsFiguresAndEveryRankHeartbeats) {
  start_coordinator();
  start_agent({"--slots", "2"});
  const std::string run = dir("run");
  const std::string id = submit_config(dp2_config(20), run);
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120))
      << get(id).DebugString() << coordinator_->output();
  const v1::Job job = get(id);
  ASSERT_EQ(job.workers_size(), 2);
  for (const auto& w : job.workers()) EXPECT_EQ(w.state(), "exited") << w.DebugString();
  // Both ranks heartbeated (the series exists per rank), and the job's step is the last one.
  for (const char* rank : {"0", "1"}) {
    EXPECT_GT(
        metric("dtrn_worker_last_heartbeat_seconds{job=\"" + id + "\",rank=\"" + rank + "\"}"), 0)
        << rank;
  }
  EXPECT_EQ(metric("dtrn_job_step{job=\"" + id + "\"}"), 20);
  // The exported figures are rank 0's line of the job (reduced over both ranks), not a sum of two
  // ranks.
  nlohmann::json last;
  for (const auto& l : metrics_without_timing(run))
    if (l["kind"] == "train") last = l;
  ASSERT_TRUE(last["layers"][0].contains("f_min")) << last.dump();
  const std::string layer = "{job=\"" + id + "\",layer=\"1\"}";
  EXPECT_DOUBLE_EQ(metric("dtrn_train_loss{job=\"" + id + "\"}"), last["loss"].get<double>());
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction" + layer),
                   last["layers"][0]["f"].get<double>());
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction_min" + layer),
                   last["layers"][0]["f_min"].get<double>());
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction_max" + layer),
                   last["layers"][0]["f_max"].get<double>());
  // One message per step (rank 0's), 20 steps.
  EXPECT_EQ(metric("dtrn_stats_messages_total"), 20);
}

TEST_F(DataParallelTest, KilledRankRestartsTheJobWhoseNewGenerationFormsItsGroupAgain) {
  start_coordinator();
  start_agent({"--slots", "2"});
  const std::string run = dir("run");
  const std::string id = submit_config(dp2_config(20), run);
  ASSERT_TRUE(eventually(
      [&] {
        auto j = get(id);
        return j.checkpoint_step() >= 5 && j.step() >= 7;
      },
      120))
      << get(id).DebugString();
  const v1::Job before = get(id);
  ASSERT_EQ(before.workers_size(), 2);
  const int victim = before.workers(1).pid();
  ASSERT_GT(victim, 0);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(eventually([&] { return get(id).state() != v1::JOB_STATE_RUNNING; }, 10));
  const double detected_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  const v1::Job failed = get(id);
  EXPECT_EQ(failed.state(), v1::JOB_STATE_RESTARTING);
  // The rank that died is named, not rank 0, which only lost it.
  EXPECT_NE(failed.message().find("rank 1 on test-host was killed by signal 9"), std::string::npos)
      << failed.message();
  // Generation 2: both ranks again, training past the checkpoint it resumed from.
  ASSERT_TRUE(eventually(
      [&] {
        auto j = get(id);
        return j.generation() == 2 && j.step() > j.checkpoint_step();
      },
      60))
      << get(id).DebugString();
  const double training_again_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  std::printf(
      "[ measured ] kill -9 of DP rank 1: detected after %.2f s, both ranks training again after "
      "%.2f s\n",
      detected_s, training_again_s);
  EXPECT_LT(detected_s, 3.0);
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120))
      << get(id).DebugString() << coordinator_->output();
  const v1::Job done = get(id);
  EXPECT_EQ(done.restarts(), 1);
  ASSERT_EQ(done.workers_size(), 2);
  for (const auto& w : done.workers()) EXPECT_EQ(w.state(), "exited") << w.DebugString();
  // Both ranks of generation 2 finished: a dp=2 config trains only in a group of two (one process
  // alone refuses it). The resumed run appends the lines an uninterrupted dp=2 run writes: within
  // the DP tolerance of one process.
  EXPECT_EQ(done.generation(), 2);
  expect_dp_tolerance(run, one_process_run(20));
}

TEST_F(DataParallelTest, RanksOnTwoAgentsMeetAtRankZerosHost) {
  // Two agents of one slot each, as two hosts would run them: rank 1's launch names rank 0's host
  // (the agents' --host, resolvable here) rather than loopback, and its agent is not the one that
  // picked the port. The agents run in srun's environment, as deploy/slurm/dtrn.sbatch starts them:
  // their workers must not take the agent's SLURM_PROCID for their own rank.
  start_coordinator();
  const auto agent = [&](const std::string& name, int slurm_rank) {
    return std::make_unique<Child>(
        std::vector<std::string>{kDtrn, "agent", "--coordinator", client_.address, "--host",
                                 "localhost", "--slots", "1", "--work-dir", dir(name)},
        dir(name + ".log"),
        std::vector<std::pair<std::string, std::string>>{
            {"SLURM_PROCID", std::to_string(slurm_rank)},
            {"SLURM_STEP_NUM_TASKS", "2"},
            {"SLURM_LOCALID", "0"}});
  };
  auto first = agent("agent-a", 0), second = agent("agent-b", 1);
  const std::string run = dir("run");
  const std::string id = submit_config(dp2_config(10), run);
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120))
      << get(id).DebugString() << coordinator_->output();
  // Each agent ran one of the ranks.
  const std::string a = first->output(), b = second->output();
  const bool a_has_0 = a.find("started worker " + id + "/0/1") != std::string::npos;
  const bool b_has_0 = b.find("started worker " + id + "/0/1") != std::string::npos;
  EXPECT_NE(a_has_0, b_has_0) << a << b;
  EXPECT_NE((a_has_0 ? b : a).find("started worker " + id + "/1/1"), std::string::npos) << a << b;
  expect_dp_tolerance(run, one_process_run(10));
}

}  // namespace
}  // namespace dtrn::coordinator::testing
