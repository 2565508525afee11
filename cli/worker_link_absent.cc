// connect_worker() for builds without the coordinator (no gRPC found): see worker_link.h.
#include <cstdlib>

#include "worker_link.h"

namespace dtrn::cli {

StatusOr<WorkerLink> connect_worker() {
  if (std::getenv("DTRN_COORDINATOR") != nullptr) {
    return Status::FailedPrecondition("DTRN_COORDINATOR is set but this dtrn was built without the coordinator "
                                      "(gRPC not found: see DTRN_COORDINATOR in CMakeLists.txt)");
  }
  return WorkerLink{};
}

}  // namespace dtrn::cli
