// A real coordinator, agent and workers on loopback for the end-to-end tests: `dtrn coordinator` and
// `dtrn agent` processes started from the built binary, a small dataset prepared once per test binary,
// the gRPC stubs a client uses, and /metrics over HTTP. Header-only.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "dtrn/coordinator/client.h"
#include "dtrn/data/prep.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/v1/coordinator.grpc.pb.h"
#include "free_port.h"
#include "process_util.h"

namespace dtrn::coordinator::testing {

namespace fs = std::filesystem;

using dtrn::testing::free_port;

// Polls `done` every 50 ms for up to `timeout_s`; true when it held.
inline bool eventually(const std::function<bool()>& done, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// Every metrics.jsonl line of a run.
inline std::vector<nlohmann::json> read_metrics(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The metrics.jsonl lines of a run without the timing fields (the only ones allowed to differ) and
// without the checkpoint lines, which a background save writes when it is joined, so their place among
// the step lines depends on timing too.
inline std::vector<nlohmann::json> metrics_without_timing(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  for (auto j : read_metrics(run_dir)) {
    if (j.value("kind", "") == "checkpoint") continue;
    j.erase("tokens_per_s");
    j.erase("step_ms");
    out.push_back(j);
  }
  return out;
}

inline const std::string kDtrn = DTRN_BINARY;

// A tiny job (about 0.1-0.3 s a step on a busy 2-core machine) on Blake's poems: one D layer (layer 1),
// checkpoints every 5 steps so restarts have something to resume from.
class ClusterTest : public ::testing::Test {
 protected:
  // The dataset and the direct run are shared by every test process of this build (ctest runs each test
  // in its own process): built once into a folder named after the dtrn binary's modification time, by
  // whichever process comes first, and renamed into place whole so that no process sees half of it.
  static void SetUpTestSuite() {
    const fs::path build = fs::path(kDtrn).parent_path().parent_path();
    const auto stamp = fs::last_write_time(kDtrn).time_since_epoch().count();
    root_ = (build / "test-fixtures" / ("coordinator-" + std::to_string(stamp))).string();
    if (fs::exists(root_ + "/direct/metrics.jsonl")) return;
    const std::string final_root = root_;
    root_ = final_root + ".tmp-" + std::to_string(::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
    auto tok = data::Tokenizer::Load(std::string(DTRN_SOURCE_DIR) + "/.assets/tokenizer");
    ASSERT_TRUE(tok.ok()) << tok.status().message() << " (run `make assets`)";
    const std::string corpus = std::string(DTRN_SOURCE_DIR) + "/.assets/corpus/gutenberg/";
    data::PrepOptions po;
    po.inputs = {corpus + "blake-poems.txt", corpus + "burgess-busterbrown.txt"};
    po.out_dir = root_ + "/data";
    po.val_patterns = {"burgess-busterbrown"};
    auto meta = data::prepare_dataset(*tok, po);
    ASSERT_TRUE(meta.ok()) << meta.status().message();
    // The reference: the same job run directly, without any coordinator.
    std::ofstream(job_yaml(20)) << job_config(20);
    const CommandResult direct = run_command({kDtrn, "train", "--config", job_yaml(20), "--run-dir", root_ + "/direct", "--quiet"});
    ASSERT_EQ(direct.code, 0) << direct.output;
    // The job file as it must read once in place (its data path is the final one), written before the rename.
    const std::string building = root_;
    root_ = final_root;
    const std::string final_yaml = job_config(20);
    std::ofstream(building + "/job-20.yaml") << final_yaml;
    std::error_code ec;
    fs::rename(building, final_root, ec);  // fails when another process got there first: use its copy
    if (ec) fs::remove_all(building);
  }
  static std::string job_config(int steps) {
    return "model: {d_model: 32, n_layers: 4, n_heads: 2, n_kv_heads: 1, d_ff: 64, seq_len: 16, layout: TDTT}\n"
           "train: {steps: " + std::to_string(steps) + ", micro_batch: 1, global_batch: 1, lr: 3.0e-3, min_lr: 3.0e-4,\n"
           "        warmup_steps: 2, seed: 5, device: cpu, eval_every: 10, eval_batches: 1}\n"
           "data: {path: " + root_ + "/data}\n"
           "checkpoint: {every: 5, keep: 0}\n";
  }
  static std::string job_yaml(int steps) { return root_ + "/job-" + std::to_string(steps) + ".yaml"; }

  void TearDown() override {
    agent_.reset();
    coordinator_.reset();
  }

  // Per test and process: state directories, run directories, logs. Removed with the process's temp folder.
  std::string dir(const std::string& name) const {
    return temp_path(std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" + name);
  }
  static void TearDownTestSuite() { fs::remove_all(fs::path(temp_path("x")).parent_path()); }

  // Starts `dtrn coordinator` on `port` (0: any) with `extra` flags; returns its gRPC port.
  int start_coordinator(const std::vector<std::string>& extra = {}, int port = 0) {
    std::vector<std::string> argv = {kDtrn, "coordinator", "--state-dir", dir("state"), "--listen",
                                     "127.0.0.1:" + std::to_string(port), "--metrics-listen", "127.0.0.1:0",
                                     "--heartbeat-timeout", "3", "--backoff", "0.5"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    // A fresh log per start: a restarted coordinator's "listening" line is its own.
    coordinator_ = std::make_unique<Child>(argv, dir("coordinator-" + std::to_string(++coordinator_starts_) + ".log"));
    const std::string p = coordinator_->wait_for("listening on 127\\.0\\.0\\.1:([0-9]+)", 20);
    metrics_port_ = std::atoi(coordinator_->wait_for("metrics http://127\\.0\\.0\\.1:([0-9]+)", 5).c_str());
    EXPECT_FALSE(p.empty()) << coordinator_->output();
    client_.address = "127.0.0.1:" + p;
    return std::atoi(p.c_str());
  }
  void start_agent(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {kDtrn, "agent", "--coordinator", client_.address, "--host", "test-host",
                                     "--work-dir", dir("agent")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    agent_ = std::make_unique<Child>(argv, dir("agent.log"));
  }

  std::unique_ptr<v1::Jobs::Stub> jobs() { return v1::Jobs::NewStub(*make_channel(client_)); }
  std::unique_ptr<v1::Workers::Stub> workers() { return v1::Workers::NewStub(*make_channel(client_)); }

  std::string submit(int steps, const std::string& run_dir, int max_restarts = 3) {
    return submit_config(job_config(steps), run_dir, max_restarts);
  }
  std::string submit_config(const std::string& config_yaml, const std::string& run_dir, int max_restarts = 3) {
    v1::SubmitJobRequest r;
    r.mutable_spec()->set_config_yaml(config_yaml);
    r.mutable_spec()->set_run_dir(run_dir);
    r.mutable_spec()->set_max_restarts(max_restarts);
    v1::SubmitJobResponse resp;
    grpc::ClientContext c;
    prepare_context(&c, client_, 5);
    const grpc::Status s = jobs()->SubmitJob(&c, r, &resp);
    EXPECT_TRUE(s.ok()) << describe(s);
    return resp.job_id();
  }
  v1::Job get(const std::string& id) {
    v1::GetJobRequest r;
    r.set_job_id(id);
    v1::Job job;
    grpc::ClientContext c;
    prepare_context(&c, client_, 2);
    (void)jobs()->GetJob(&c, r, &job);
    return job;
  }
  bool wait_state(const std::string& id, v1::JobState state, double timeout_s) {
    return eventually([&] { return get(id).state() == state; }, timeout_s);
  }
  std::string metrics() {
    httplib::Client http("127.0.0.1", metrics_port_);
    auto res = http.Get("/metrics");
    return res && res->status == 200 ? res->body : "";
  }
  // The value of one exposition line ("name{labels}"), NaN when absent.
  double metric(const std::string& series) {
    const std::string text = metrics();
    const size_t at = text.find("\n" + series + " ");
    if (at == std::string::npos) return std::nan("");
    return std::stod(text.substr(at + series.size() + 2));
  }

  static std::string root_;
  ClientOptions client_;
  int metrics_port_ = 0;
  int coordinator_starts_ = 0;
  std::unique_ptr<Child> coordinator_, agent_;
};
inline std::string ClusterTest::root_;

}  // namespace dtrn::coordinator::testing
