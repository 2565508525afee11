// The gRPC service implementations: authentication, then a call into the Coordinator, its Status turned
// into a grpc::Status. Private to the coordinator library.
#pragma once

#include <memory>
#include <string>

#include "dtrn/coordinator/coordinator.h"
#include "dtrn/v1/coordinator.grpc.pb.h"

namespace dtrn::coordinator {

// The per-call checks every service shares.
class CallGuard {
 public:
  CallGuard(Coordinator* coordinator, std::string token) : coordinator_(coordinator), token_(std::move(token)) {}
  grpc::Status authenticate(grpc::ServerContext* context) const;
  grpc::Status convert(const Status& status) const;
  Coordinator* coordinator() const { return coordinator_; }

 private:
  Coordinator* coordinator_;
  std::string token_;
};

std::unique_ptr<grpc::Service> make_jobs_service(const CallGuard* guard);
std::unique_ptr<grpc::Service> make_agents_service(const CallGuard* guard);
std::unique_ptr<grpc::Service> make_workers_service(const CallGuard* guard);

}  // namespace dtrn::coordinator
