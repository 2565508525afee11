// connect_worker_telemetry() for builds without the coordinator (no gRPC found): see worker_link.h.
#include <cstdlib>

#include "worker_link.h"

namespace dtrn::cli {

StatusOr<std::unique_ptr<train::TelemetrySink>> connect_worker_telemetry() {
  if (std::getenv("DTRN_COORDINATOR") != nullptr) {
    return Status::FailedPrecondition("DTRN_COORDINATOR is set but this dtrn was built without the coordinator "
                                      "(gRPC not found: see DTRN_COORDINATOR in CMakeLists.txt)");
  }
  return std::unique_ptr<train::TelemetrySink>();
}

}  // namespace dtrn::cli
