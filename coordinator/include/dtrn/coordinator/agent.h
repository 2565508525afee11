// `dtrn agent`: one per host. Registers its slots with the coordinator, then polls it: starts the
// workers it is given (each a `dtrn train` process told its coordinator, job, rank, generation and
// secret through DTRN_* environment variables, see worker_client.h), stops the ones it is told to stop
// (SIGTERM, on which `dtrn train` saves a checkpoint and exits; SIGKILL after a grace period), and reports every exit with its status or signal. Workers die
// with their agent (PR_SET_PDEATHSIG). When the coordinator restarts, the agent re-registers under the
// same id and reports its live workers, which the coordinator adopts again.
//
// Workers of a multi-rank job get the launcher variables their collectives bootstrap from (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; Note [Rendezvous] in coordinator.cc; rank 0's port is
// picked here) and, unless the agent's own environment sets it, OMP_NUM_THREADS = cores / slots, so
// that the workers of one host do not oversubscribe its cores (torchrun's default is 1).
//
// Files: WORK_DIR/<job>/rank-<r>-gen-<g>.yaml (the config handed over) and .log (the worker's stdout
// and stderr). Not thread-safe: run() owns the calling thread.
#pragma once

#include <atomic>
#include <string>

#include "dtrn/coordinator/client.h"
#include "dtrn/runtime/status.h"

namespace dtrn::coordinator {

struct AgentOptions {
  ClientOptions coordinator;
  std::string host;        // the name reported (default: this machine's host name)
  int slots = 1;
  std::string dtrn_binary; // default: this executable
  std::string work_dir = "agent";
  double poll_s = 0.3;
  double stop_grace_s = 30;  // SIGTERM makes `dtrn train` save a checkpoint (docs/runs.md) before it exits
  bool verbose = true;     // one line per worker started, stopped or exited
};

// Runs until `*stop` becomes true, then stops its workers. Returns an error only for bad options.
Status run_agent(const AgentOptions& options, const std::atomic<bool>* stop);

}  // namespace dtrn::coordinator
