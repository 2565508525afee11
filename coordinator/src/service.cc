#include "service.h"

#include <chrono>

namespace dtrn::coordinator {
namespace {

// Compares in time independent of where the strings differ, so the token cannot be guessed byte by byte.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

class JobsService final : public v1::Jobs::Service {
 public:
  explicit JobsService(const CallGuard* guard) : g_(guard) {}
  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req, v1::SubmitJobResponse* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto id = g_->coordinator()->submit(req->spec());
    if (!id.ok()) return g_->convert(id.status());
    resp->set_job_id(*id);
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto job = g_->coordinator()->get(req->job_id());
    if (!job.ok()) return g_->convert(job.status());
    *resp = *job;
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest*, v1::ListJobsResponse* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    for (auto& job : g_->coordinator()->list()) *resp->add_jobs() = std::move(job);
    return grpc::Status::OK;
  }
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto job = g_->coordinator()->cancel(req->job_id());
    if (!job.ok()) return g_->convert(job.status());
    *resp = *job;
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto queue = g_->coordinator()->watch(req->job_id());
    if (!queue.ok()) return g_->convert(queue.status());
    // The initial metadata tells the client it is subscribed: every event from now on reaches it (a
    // client that must not miss one waits for it, ClientReader::WaitForInitialMetadata).
    writer->SendInitialMetadata();
    // Ends when the client goes away, or once the job is over and its last events are sent.
    v1::JobEvent event;
    while (!ctx->IsCancelled()) {
      if ((*queue)->pop(&event, std::chrono::milliseconds(250))) {
        if (!writer->Write(event)) break;
      } else if (g_->coordinator()->is_terminal(req->job_id())) {
        break;
      }
    }
    return grpc::Status::OK;
  }

 private:
  const CallGuard* g_;
};

class AgentsService final : public v1::Agents::Service {
 public:
  explicit AgentsService(const CallGuard* guard) : g_(guard) {}
  grpc::Status RegisterAgent(grpc::ServerContext* ctx, const v1::RegisterAgentRequest* req,
                             v1::RegisterAgentResponse* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    if (req->slots() < 1 || req->slots() > 4096 || req->host().empty()) {
      return g_->convert(Status::InvalidArgument("an agent needs a host and 1..4096 slots"));
    }
    resp->set_agent_id(g_->coordinator()->register_agent(req->host(), req->slots(), req->agent_id()));
    return grpc::Status::OK;
  }
  grpc::Status AgentPoll(grpc::ServerContext* ctx, const v1::AgentPollRequest* req, v1::AgentPollResponse* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto r = g_->coordinator()->agent_poll(*req);
    if (!r.ok()) return g_->convert(r.status());
    *resp = std::move(*r);
    return grpc::Status::OK;
  }

 private:
  const CallGuard* g_;
};

class WorkersService final : public v1::Workers::Service {
 public:
  explicit WorkersService(const CallGuard* guard) : g_(guard) {}
  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                              v1::Rendezvous* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto r = g_->coordinator()->register_worker(*req);
    if (!r.ok()) return g_->convert(r.status());
    *resp = std::move(*r);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req, v1::HeartbeatResponse* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto r = g_->coordinator()->heartbeat(*req);
    if (!r.ok()) return g_->convert(r.status());
    *resp = *r;
    return grpc::Status::OK;
  }
  // A stream ends at the first refused message: the statistics after it would be out of order anyway.
  grpc::Status StreamStats(grpc::ServerContext* ctx, grpc::ServerReader<v1::StepStats>* reader,
                           v1::StreamStatsResponse* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    v1::StepStats stats;
    int64_t accepted = 0;
    while (reader->Read(&stats)) {
      const Status s = g_->coordinator()->step_stats(stats);
      if (!s.ok()) return g_->convert(s);
      ++accepted;
    }
    resp->set_accepted(accepted);
    return grpc::Status::OK;
  }
  grpc::Status ReportShard(grpc::ServerContext* ctx, const v1::ShardReport* req, v1::ShardReportResponse* resp) override {
    if (auto s = g_->authenticate(ctx); !s.ok()) return s;
    auto r = g_->coordinator()->report_shard(*req);
    if (!r.ok()) return g_->convert(r.status());
    *resp = std::move(*r);
    return grpc::Status::OK;
  }

 private:
  const CallGuard* g_;
};

}  // namespace

grpc::Status CallGuard::authenticate(grpc::ServerContext* context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end() && same_secret(std::string(it->second.data(), it->second.size()), "Bearer " + token_)) {
    return grpc::Status::OK;
  }
  coordinator_->rejected("unauthenticated").inc();
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      it == metadata.end() ? "no authorization token" : "wrong authorization token");
}

grpc::Status CallGuard::convert(const Status& status) const {
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (status.code()) {
    case StatusCode::kOk: return grpc::Status::OK;
    case StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case StatusCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case StatusCode::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case StatusCode::kCancelled: code = grpc::StatusCode::CANCELLED; break;
    case StatusCode::kDataLoss: code = grpc::StatusCode::DATA_LOSS; break;
    default: break;
  }
  return grpc::Status(code, status.message());
}

std::unique_ptr<grpc::Service> make_jobs_service(const CallGuard* guard) { return std::make_unique<JobsService>(guard); }
std::unique_ptr<grpc::Service> make_agents_service(const CallGuard* guard) { return std::make_unique<AgentsService>(guard); }
std::unique_ptr<grpc::Service> make_workers_service(const CallGuard* guard) { return std::make_unique<WorkersService>(guard); }

}  // namespace dtrn::coordinator
