// The flags and event printing the coordinator-facing subcommands share (service_commands.h).
#include <chrono>
#include <iostream>
#include <thread>

#include "dtrn/coordinator/coordinator.h"
#include "dtrn/v1/coordinator.grpc.pb.h"
#include "service_commands.h"

namespace dtrn::cli {

std::vector<FlagSpec> client_flag_specs() { return {{"coordinator"}, {"auth-token-file"}, {"tls-ca"}}; }

StatusOr<coordinator::ClientOptions> client_options(const Args& args) {
  coordinator::ClientOptions o;
  o.address = args.get_or("coordinator", "127.0.0.1:50051");
  o.tls_ca_file = args.get_or("tls-ca", "");
  if (auto f = args.get("auth-token-file")) {
    auto token = coordinator::read_token_file(*f);
    if (!token.ok()) return Status::InvalidArgument("--auth-token-file: " + token.status().message());
    o.auth_token = *token;
  }
  return o;
}

StatusOr<std::string> submit_job(const coordinator::ClientOptions& options, const v1::JobSpec& spec) {
  auto channel = coordinator::make_channel(options);
  if (!channel.ok()) return channel.status();
  grpc::ClientContext context;
  coordinator::prepare_context(&context, options, 10);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::SubmitJobResponse response;
  const grpc::Status s = v1::Jobs::NewStub(*channel)->SubmitJob(&context, request, &response);
  if (!s.ok()) return Status::FailedPrecondition("coordinator " + options.address + ": " + coordinator::describe(s));
  return response.job_id();
}

void print_event(std::ostream& os, const v1::JobEvent& event, int64_t every) {
  if (event.has_log()) {
    os << "coordinator: " << event.log() << std::endl;
  } else if (event.has_step() && every > 0 && event.step().step() % every == 0) {
    const auto& s = event.step();
    char buf[160];
    std::snprintf(buf, sizeof buf, "step %lld | loss %.4f | %.0f tok/s | %.0f ms |", static_cast<long long>(s.step()),
                  s.loss(), s.tokens_per_s(), s.step_ms());
    os << buf;
    for (const auto& l : s.layers()) {
      std::snprintf(buf, sizeof buf, " L%d %.2f%s", l.layer(), l.f(), l.starved() ? "!starved" : (l.saturated() ? "!saturated" : ""));
      os << buf;
    }
    os << std::endl;
  }
}

v1::JobState follow_job(const coordinator::ClientOptions& options, const std::string& job_id, int64_t every,
                        std::string* error) {
  auto channel = coordinator::make_channel(options);
  if (!channel.ok()) {
    *error = channel.status().message();
    return v1::JOB_STATE_UNSPECIFIED;
  }
  auto stub = v1::Jobs::NewStub(*channel);
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  // The stream is re-opened when it breaks (a coordinator restart), for up to a minute of failures.
  for (int failures = 0; failures < 120;) {
    grpc::ClientContext context;
    coordinator::prepare_context(&context, options, 0);
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    auto reader = stub->WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      failures = 0;
      if (event.has_state()) state = event.state().state();
      print_event(std::cout, event, every);
    }
    const grpc::Status s = reader->Finish();
    if (state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED) {
      return state;
    }
    *error = coordinator::describe(s);
    if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED || s.error_code() == grpc::StatusCode::NOT_FOUND) break;
    ++failures;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

}  // namespace dtrn::cli
