// Telemetry aggregation over ranks and the coordinator's starvation and saturation verdicts, through a
// real CoordinatorServer on loopback driven over gRPC by a simulated agent and two simulated workers of a
// dp=2 job, so that the test chooses every rank's fractions (data_parallel_test.cc runs real workers).
// Expected values are worked out by hand from the fractions sent.
#include <cmath>

#include "cluster.h"
#include "dtrn/coordinator/server.h"

namespace dtrn::coordinator::testing {
namespace {

class TelemetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = temp_path(std::string("telemetry-") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(state_);
    ServerOptions o;
    o.coordinator.state_dir = state_;
    o.listen = "127.0.0.1:0";
    o.metrics_listen = "127.0.0.1:0";
    auto server = CoordinatorServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status().message();
    server_ = std::move(*server);
    client_.address = "127.0.0.1:" + std::to_string(server_->port());
    channel_ = *make_channel(client_);

    // A simulated agent with two slots receives the two launches of a dp=2 job, secrets included: rank 0's
    // first, with no port, and rank 1's once the agent reports the port it gave rank 0 (the rendezvous).
    auto agents = v1::Agents::NewStub(channel_);
    v1::RegisterAgentRequest reg;
    reg.set_host("sim-host");
    reg.set_slots(2);
    v1::RegisterAgentResponse agent;
    grpc::ClientContext c1;
    ASSERT_TRUE(agents->RegisterAgent(&c1, reg, &agent).ok());
    v1::SubmitJobRequest submit;
    submit.mutable_spec()->set_config_yaml(
        "model: {d_model: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, d_ff: 160, seq_len: 64, layout: TDTD}\n"
        "routing: {starvation_threshold: 0.01, starvation_window: 3}\n"
        "train: {steps: 100, micro_batch: 1, global_batch: 2, device: cpu}\n"
        "parallel: {dp: 2}\ndata: {path: unused}\n");
    v1::SubmitJobResponse job;
    grpc::ClientContext c2;
    ASSERT_TRUE(v1::Jobs::NewStub(channel_)->SubmitJob(&c2, submit, &job).ok());
    job_id_ = job.job_id();
    v1::AgentPollRequest poll;
    poll.set_agent_id(agent.agent_id());
    v1::AgentPollResponse launches;
    grpc::ClientContext c3;
    ASSERT_TRUE(agents->AgentPoll(&c3, poll, &launches).ok());
    ASSERT_EQ(launches.launch_size(), 1);
    EXPECT_EQ(launches.launch(0).worker().rank(), 0);
    EXPECT_EQ(launches.launch(0).master_port(), 0);
    refs_.push_back(launches.launch(0).worker());
    v1::ProcessReport* rank0 = poll.add_processes();
    *rank0->mutable_worker() = refs_[0];
    rank0->set_running(true);
    rank0->set_pid(4242);
    rank0->set_master_port(29999);
    grpc::ClientContext c4;
    v1::AgentPollResponse second;
    ASSERT_TRUE(agents->AgentPoll(&c4, poll, &second).ok());
    ASSERT_EQ(second.launch_size(), 1);
    EXPECT_EQ(second.launch(0).worker().rank(), 1);
    EXPECT_EQ(second.launch(0).local_rank(), 1);
    EXPECT_EQ(second.launch(0).master_port(), 29999);
    EXPECT_EQ(second.launch(0).master_addr(), "127.0.0.1");  // on rank 0's own agent
    refs_.push_back(second.launch(0).worker());
    // Watch from the start.
    watch_context_ = std::make_unique<grpc::ClientContext>();
    v1::WatchJobRequest w;
    w.set_job_id(job_id_);
    reader_ = v1::Jobs::NewStub(channel_)->WatchJob(watch_context_.get(), w);
    reader_->WaitForInitialMetadata();  // subscribed: no event of the test's steps can be missed
  }
  void TearDown() override {
    watch_context_->TryCancel();
    reader_.reset();
    server_.reset();
    fs::remove_all(state_);
  }

  // Sends step `step` of rank `rank` with D layers 1 and 3 at fractions f1, f3. `ranks` > 1: the message
  // speaks for that many ranks, as a data-parallel rank 0's does, with f's extremes over them (f -+ 0.05).
  void send(int rank, int64_t step, double f1, double f3, bool fallback = false, int ranks = 0) {
    v1::StepStats m;
    m.set_ranks(ranks);
    *m.mutable_worker() = refs_[rank];
    m.set_step(step);
    m.set_loss(4.0 + rank);
    m.set_tokens_per_s(100);
    m.set_step_ms(50 + 50 * rank);
    for (auto [layer, f] : {std::pair<int, double>{1, f1}, {3, f3}}) {
      auto* l = m.add_layers();
      l->set_layer(layer);
      l->set_f(f);
      l->set_s(f);
      l->set_fallback(fallback && layer == 1);
      l->set_fallback_count(fallback && layer == 1 ? 2 : 0);
      // Routing-control telemetry that differs by rank, so the summary's mean, sum and "any" show.
      for (double q : {0.1 * f, 0.5 * f, 0.9 * f + rank}) l->add_p_attn_quantiles(q);
      l->set_threshold_bias(layer + 0.5);
      l->set_collapsed(rank == 1 && layer == 3);
      if (ranks > 1) {
        l->set_f_min(f - 0.05);
        l->set_f_max(f + 0.05);
      }
    }
    grpc::ClientContext c;
    v1::StreamStatsResponse resp;
    auto writer = v1::Workers::NewStub(channel_)->StreamStats(&c, &resp);
    ASSERT_TRUE(writer->Write(m));
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    ASSERT_TRUE(s.ok()) << describe(s);
  }

  // Events until the step summary of `step` (included).
  std::vector<v1::JobEvent> events_through(int64_t step) {
    std::vector<v1::JobEvent> out;
    v1::JobEvent e;
    while (reader_->Read(&e)) {
      out.push_back(e);
      if (e.has_step() && e.step().step() == step) break;
    }
    return out;
  }

  double metric(const std::string& series) {
    const std::string text = server_->coordinator().metrics().serialize();
    const size_t at = text.find("\n" + series + " ");
    return at == std::string::npos ? std::nan("") : std::stod(text.substr(at + series.size() + 2));
  }

  std::string state_, job_id_;
  ClientOptions client_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<CoordinatorServer> server_;
  std::vector<v1::WorkerRef> refs_;
  std::unique_ptr<grpc::ClientContext> watch_context_;
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader_;
};

TEST_F(TelemetryTest, AStepIsSummarizedOverRanksOnlyWhenEveryRankReportedIt) {
  send(0, 1, 0.2, 0.5);
  EXPECT_TRUE(std::isnan(metric("dtrn_job_step{job=\"" + job_id_ + "\"}")) ||
              metric("dtrn_job_step{job=\"" + job_id_ + "\"}") == 0);  // rank 1 has not reported step 1
  send(1, 1, 0.0, 0.7);
  const auto events = events_through(1);
  ASSERT_TRUE(events.back().has_step());
  const v1::StepSummary& s = events.back().step();
  EXPECT_DOUBLE_EQ(s.loss(), 4.5);           // mean of 4 and 5
  EXPECT_DOUBLE_EQ(s.tokens_per_s(), 200);   // sum over ranks
  EXPECT_DOUBLE_EQ(s.step_ms(), 100);        // the slowest rank
  ASSERT_EQ(s.layers_size(), 2);
  EXPECT_DOUBLE_EQ(s.layers(0).f(), 0.1);    // (0.2 + 0.0) / 2
  EXPECT_DOUBLE_EQ(s.layers(0).f_min(), 0.0);
  EXPECT_DOUBLE_EQ(s.layers(0).f_max(), 0.2);
  EXPECT_DOUBLE_EQ(s.layers(1).f(), 0.6);
  ASSERT_EQ(s.layers(0).p_attn_quantiles_size(), 3);
  EXPECT_DOUBLE_EQ(s.layers(0).p_attn_quantiles(2), (0.9 * 0.2 + 0.9 * 0.0 + 1) / 2);  // mean over ranks
  EXPECT_DOUBLE_EQ(s.layers(1).threshold_bias(), 3.5);
  EXPECT_FALSE(s.layers(0).collapsed());
  EXPECT_TRUE(s.layers(1).collapsed());  // on rank 1
  const std::string layer1 = "{job=\"" + job_id_ + "\",layer=\"1\"}";
  const std::string layer3 = "{job=\"" + job_id_ + "\",layer=\"3\"}";
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_p_attn_quantile{job=\"" + job_id_ + "\",layer=\"1\",q=\"0.9\"}"), 0.59);
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_threshold_bias" + layer1), 1.5);
  EXPECT_EQ(metric("dtrn_layer_collapsed" + layer3), 1);
  EXPECT_EQ(metric("dtrn_layer_collapsed" + layer1), 0);
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction" + layer1), 0.1);
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction_min" + layer1), 0.0);
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction_max" + layer1), 0.2);
  EXPECT_EQ(metric("dtrn_step_duration_seconds_count{job=\"" + job_id_ + "\",rank=\"1\"}"), 1);
  EXPECT_DOUBLE_EQ(metric("dtrn_step_duration_seconds_sum{job=\"" + job_id_ + "\",rank=\"1\"}"), 0.1);
}

TEST_F(TelemetryTest, StarvationAndSaturationAfterTheWindowAndRecovery) {
  // Layer 1: mean f 0.005 < 0.01 for steps 1-3 (window 3): starved at step 3, not before; back to 0.3 at
  // step 4: recovered. Layer 3: mean f 0.95 > 0.9 from step 1: saturated at step 3.
  for (int64_t step = 1; step <= 4; ++step) {
    const double f1 = step <= 3 ? 0.005 : 0.3;
    send(0, step, f1, 0.95);
    send(1, step, f1, 0.95);
  }
  std::vector<std::string> routing;
  for (const auto& e : events_through(4)) {
    if (e.has_routing()) {
      routing.push_back("layer " + std::to_string(e.routing().layer()) + " " + e.routing().kind() + " at " +
                        std::to_string(e.routing().step()));
    }
  }
  EXPECT_EQ(routing, (std::vector<std::string>{"layer 1 starved at 3", "layer 3 saturated at 3", "layer 1 recovered at 4"}));
  EXPECT_EQ(metric("dtrn_layer_starved{job=\"" + job_id_ + "\",layer=\"1\"}"), 0);
  EXPECT_EQ(metric("dtrn_layer_saturated{job=\"" + job_id_ + "\",layer=\"3\"}"), 1);
  const std::string log = slurp(state_ + "/jobs/" + job_id_ + ".log");
  EXPECT_NE(log.find("layer 1 starved at step 3 (routed fraction 0.0050)"), std::string::npos) << log;
}

TEST_F(TelemetryTest, AFallbackOnAnyRankStarvesTheLayerAtOnceAndIsCounted) {
  send(0, 1, 0.15, 0.2, /*fallback=*/true);
  send(1, 1, 0.3, 0.2);
  const auto events = events_through(1);
  EXPECT_TRUE(events.back().step().layers(0).starved());
  EXPECT_EQ(events.back().step().layers(0).fallback_count(), 2);  // rank 0's two micro-batches
  EXPECT_EQ(metric("dtrn_layer_fallback_total{job=\"" + job_id_ + "\",layer=\"1\"}"), 1);
  EXPECT_EQ(metric("dtrn_layer_fallback_total{job=\"" + job_id_ + "\",layer=\"3\"}"), 0);
}

TEST_F(TelemetryTest, RankZerosMessageForTheWholeJobIsSummarizedAloneWithItsExtremes) {
  // A data-parallel trainer reduces the step over its ranks; rank 0 reports it for both (ranks = 2).
  send(0, 1, 0.2, 0.5, /*fallback=*/false, /*ranks=*/2);
  const auto events = events_through(1);
  ASSERT_TRUE(events.back().has_step());
  const v1::StepSummary& s = events.back().step();
  EXPECT_DOUBLE_EQ(s.loss(), 4.0);           // rank 0's figure is the job's: no mean with a missing rank
  EXPECT_DOUBLE_EQ(s.tokens_per_s(), 100);   // the job's throughput, not doubled
  EXPECT_DOUBLE_EQ(s.layers(0).f(), 0.2);
  EXPECT_DOUBLE_EQ(s.layers(0).f_min(), 0.15);  // the extremes the message carries
  EXPECT_DOUBLE_EQ(s.layers(0).f_max(), 0.25);
  EXPECT_DOUBLE_EQ(metric("dtrn_layer_routed_fraction_max{job=\"" + job_id_ + "\",layer=\"3\"}"), 0.55);
}

TEST_F(TelemetryTest, AMessageClaimingMoreRanksThanTheJobHasIsRefused) {
  v1::StepStats m;
  *m.mutable_worker() = refs_[0];
  m.set_step(1);
  m.set_ranks(3);
  grpc::ClientContext c;
  v1::StreamStatsResponse resp;
  auto writer = v1::Workers::NewStub(channel_)->StreamStats(&c, &resp);
  writer->Write(m);
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("ranks 3 is outside 0..2"), std::string::npos) << s.error_message();
}

}  // namespace
}  // namespace dtrn::coordinator::testing
