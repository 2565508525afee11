// The one place `dtrn train` meets the coordinator: when an agent started this process (DTRN_COORDINATOR
// and the other DTRN_* variables are set, see coordinator/worker_client.h), the run reports to its
// coordinator through the link's sink and commits its checkpoints through its barrier; otherwise both are
// null and the run is a plain one. In a build without the coordinator, DTRN_COORDINATOR is an error that
// says so.
#pragma once

#include <memory>

#include "dtrn/runtime/status.h"
#include "dtrn/train/commit_barrier.h"
#include "dtrn/train/telemetry.h"

namespace dtrn::cli {

struct WorkerLink {
  std::unique_ptr<train::TelemetrySink> telemetry;
  std::unique_ptr<train::CommitBarrier> commit_barrier;
};

StatusOr<WorkerLink> connect_worker();

}  // namespace dtrn::cli
