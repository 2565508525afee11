#include "dtrn/coordinator/worker_client.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "dtrn/coordinator/coordinator_barrier.h"

namespace dtrn::coordinator {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxQueued = 10000;  // steps kept while the coordinator is away; older ones are dropped

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

StatusOr<WorkerIdentity> worker_identity_from_env() {
  WorkerIdentity id;
  id.coordinator.address = env("DTRN_COORDINATOR");
  if (id.coordinator.address.empty()) return Status::NotFound("DTRN_COORDINATOR is not set");
  id.coordinator.auth_token = env("DTRN_AUTH_TOKEN");
  id.coordinator.tls_ca_file = env("DTRN_TLS_CA");
  id.host = env("DTRN_WORKER_HOST");
  id.worker.set_job_id(env("DTRN_JOB_ID"));
  id.worker.set_secret(env("DTRN_WORKER_SECRET"));
  for (const char* name : {"DTRN_JOB_ID", "DTRN_RANK", "DTRN_GENERATION", "DTRN_WORKER_SECRET"}) {
    if (env(name).empty()) return Status::InvalidArgument(std::string(name) + ": not set, but DTRN_COORDINATOR is");
  }
  char* end = nullptr;
  id.worker.set_rank(static_cast<int32_t>(std::strtol(env("DTRN_RANK").c_str(), &end, 10)));
  if (*end != '\0') return Status::InvalidArgument("DTRN_RANK: not an integer");
  id.worker.set_generation(static_cast<int32_t>(std::strtol(env("DTRN_GENERATION").c_str(), &end, 10)));
  if (*end != '\0') return Status::InvalidArgument("DTRN_GENERATION: not an integer");
  return id;
}

WorkerClient::WorkerClient(const WorkerIdentity& identity) : identity_(identity) {}

StatusOr<std::unique_ptr<WorkerClient>> WorkerClient::Connect(const WorkerIdentity& identity, double register_timeout_s) {
  std::unique_ptr<WorkerClient> c(new WorkerClient(identity));
  auto channel = make_channel(identity.coordinator);
  if (!channel.ok()) return channel.status();
  c->channel_ = *channel;
  c->stub_ = v1::Workers::NewStub(c->channel_);
  v1::RegisterWorkerRequest request;
  *request.mutable_worker() = identity.worker;
  request.set_host(identity.host);
  request.set_pid(getpid());
  const auto deadline = Clock::now() + std::chrono::duration<double>(register_timeout_s);
  while (true) {
    grpc::ClientContext context;
    prepare_context(&context, identity.coordinator, 2);
    context.set_wait_for_ready(true);
    const grpc::Status s = c->stub_->RegisterWorker(&context, request, &c->rendezvous_);
    if (s.ok()) break;
    const bool retry = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!retry || Clock::now() > deadline) {
      return Status::FailedPrecondition("coordinator " + identity.coordinator.address + ": " + describe(s));
    }
  }
  c->heartbeat_thread_ = std::thread([p = c.get()] { p->heartbeat_loop(); });
  c->stats_thread_ = std::thread([p = c.get()] { p->stats_loop(); });
  return c;
}

std::unique_ptr<train::CommitBarrier> WorkerClient::commit_barrier() const {
  return std::make_unique<CoordinatorBarrier>(identity_, channel_, rendezvous_.world_size());
}

WorkerClient::~WorkerClient() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(5), [&] { return queue_.empty(); });
    closing_ = true;
  }
  cv_.notify_all();
  if (stats_thread_.joinable()) stats_thread_.join();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  send_heartbeat();
}

void WorkerClient::on_phase(const std::string& phase, int64_t step) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (phase == phase_ && step == step_) return;
    heartbeat_due_ = heartbeat_due_ || phase != phase_;
    phase_ = phase;
    step_ = step;
  }
  cv_.notify_all();
}

void WorkerClient::on_step(const train::StepStats& stats) {
  v1::StepStats m;
  *m.mutable_worker() = identity_.worker;
  m.set_step(stats.step);
  m.set_loss(stats.loss);
  m.set_tokens_per_s(stats.tokens_per_s);
  m.set_step_ms(stats.step_ms);
  for (const auto& l : stats.layers) {
    auto* ml = m.add_layers();
    ml->set_layer(static_cast<int32_t>(l.layer));
    ml->set_f(l.f);
    ml->set_s(l.s);
    ml->set_fallback(l.fallback);
    ml->set_starved(l.starved);
    ml->set_saturated(l.saturated);
    for (double q : {l.p10, l.p50, l.p90}) ml->add_p_attn_quantiles(q);
    ml->set_threshold_bias(l.bias);
    ml->set_fallback_count(l.fallbacks);
    ml->set_collapsed(l.collapsed);
    ml->set_f_min(l.f_min);
    ml->set_f_max(l.f_max);
  }
  m.set_ranks(static_cast<int32_t>(stats.ranks));
  {
    std::lock_guard<std::mutex> lock(mu_);
    step_ = stats.step;
    if (queue_.size() >= kMaxQueued) queue_.pop_front();
    queue_.push_back(std::move(m));
  }
  cv_.notify_all();
}

void WorkerClient::on_checkpoint(const train::CheckpointStats& checkpoint) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    checkpoint_ = checkpoint;
    heartbeat_due_ = true;
  }
  cv_.notify_all();
}

bool WorkerClient::send_heartbeat() {
  v1::HeartbeatRequest request;
  *request.mutable_worker() = identity_.worker;
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_step(step_);
    request.set_phase(phase_);
    request.set_checkpoint_step(checkpoint_.step);
    request.set_checkpoint_blocked_ms(checkpoint_.blocked_ms);
    request.set_checkpoint_write_ms(checkpoint_.write_ms);
  }
  v1::HeartbeatResponse response;
  grpc::ClientContext context;
  prepare_context(&context, identity_.coordinator, 2);
  const grpc::Status s = stub_->Heartbeat(&context, request, &response);
  if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED || (s.ok() && response.stop())) stop_ = true;
  return s.ok();
}

void WorkerClient::heartbeat_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!closing_) {
    cv_.wait_for(lock, std::chrono::seconds(1), [&] { return closing_ || heartbeat_due_; });
    if (closing_) break;
    heartbeat_due_ = false;
    lock.unlock();
    send_heartbeat();
    lock.lock();
  }
}

void WorkerClient::stats_loop() {
  // One client stream at a time; a broken one (coordinator restart) is replaced after a short pause.
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (queue_.empty()) return;
    }
    grpc::ClientContext context;
    prepare_context(&context, identity_.coordinator, 0);
    v1::StreamStatsResponse response;
    auto writer = stub_->StreamStats(&context, &response);
    bool broken = false;
    while (!broken) {
      v1::StepStats next;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
        if (queue_.empty()) break;
        next = queue_.front();
      }
      if (!writer->Write(next)) {
        broken = true;
        break;
      }
      std::lock_guard<std::mutex> lock(mu_);
      queue_.pop_front();
      if (queue_.empty()) cv_.notify_all();
    }
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED) stop_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_) return;
    }
    if (broken || !s.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

}  // namespace dtrn::coordinator
