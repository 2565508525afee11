// connect_worker_telemetry() with the coordinator built in: see worker_link.h.
#include "../worker_link.h"

#include "dtrn/coordinator/worker_client.h"

namespace dtrn::cli {

StatusOr<std::unique_ptr<train::TelemetrySink>> connect_worker_telemetry() {
  auto identity = coordinator::worker_identity_from_env();
  if (!identity.ok()) {
    if (identity.status().code() == StatusCode::kNotFound) return std::unique_ptr<train::TelemetrySink>();
    return identity.status();
  }
  auto client = coordinator::WorkerClient::Connect(*identity);
  if (!client.ok()) return client.status();
  return std::unique_ptr<train::TelemetrySink>(std::move(*client));
}

}  // namespace dtrn::cli
