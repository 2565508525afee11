// connect_worker() with the coordinator built in: see worker_link.h.
#include "../worker_link.h"

#include "dtrn/coordinator/worker_client.h"

namespace dtrn::cli {

StatusOr<WorkerLink> connect_worker() {
  auto identity = coordinator::worker_identity_from_env();
  if (!identity.ok()) {
    if (identity.status().code() == StatusCode::kNotFound) return WorkerLink{};
    return identity.status();
  }
  auto client = coordinator::WorkerClient::Connect(*identity);
  if (!client.ok()) return client.status();
  WorkerLink link;
  link.commit_barrier = (*client)->commit_barrier();
  link.telemetry = std::move(*client);
  return link;
}

}  // namespace dtrn::cli
