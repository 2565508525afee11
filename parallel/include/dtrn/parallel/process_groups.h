// ProcessGroups: this process's place in a job of dp x tp ranks and the communicators of its groups.
// Tensor parallelism is innermost: world rank = dp_rank * tp + tp_rank, so a TP group is tp consecutive
// ranks (one host under mpirun's and srun's default block placement, where its heavy traffic belongs) and
// a DP group takes every tp-th rank. Groups are passed explicitly to whatever communicates; nothing here
// is global.
//
// Ownership: ProcessGroups owns the job store, the world and the group communicators; destroy it after
// every Work is done. Thread-safety: as Communicator.
#pragma once

#include <memory>

#include "dtrn/parallel/communicator.h"
#include "dtrn/parallel/launch_env.h"
#include "dtrn/parallel/lost_rank.h"
#include "dtrn/parallel/tcp_store.h"

namespace dtrn::parallel {

struct ParallelOptions {
  int dp = 1;
  int tp = 1;
  Device device = Device::cpu();  // CPU: MPI collectives (TCP ones under RANK/WORLD_SIZE); CUDA: NCCL
  double timeout_s = 300;         // Note [Lost ranks]: a collective waiting longer ends the process
};

class ProcessGroups {
 public:
  // Joins the job this process was launched into (launch_env.h). A single process without a launcher
  // gets the single-process communicators (dp = tp = 1 only). Fails (InvalidArgument) when dp * tp is
  // not the launcher's world size, naming both.
  static StatusOr<std::unique_ptr<ProcessGroups>> Join(const ParallelOptions& options);
  // The groups of an existing world (tests; the coordinator's rendezvous). world.size() == dp * tp.
  static StatusOr<std::unique_ptr<ProcessGroups>> FromWorld(std::unique_ptr<Communicator> world, int dp, int tp);
  ~ProcessGroups();

  Communicator& world() { return *world_; }
  Communicator& dp() { return *dp_; }
  Communicator& tp() { return *tp_; }
  int rank() const { return world_->rank(); }
  int dp_rank() const { return dp_->rank(); }
  int dp_size() const { return dp_->size(); }
  int tp_rank() const { return tp_->rank(); }
  int tp_size() const { return tp_->size(); }
  const LaunchEnv& launch() const { return launch_; }

 private:
  ProcessGroups() = default;
  Status make_groups(int dp, int tp);

  LaunchEnv launch_;
  std::shared_ptr<Liveness> liveness_;
  std::unique_ptr<TcpStore> store_;
  std::unique_ptr<Communicator> bootstrap_;  // MPI world under mpirun/srun when the collectives are NCCL's
  std::unique_ptr<Communicator> world_, dp_, tp_;
};

}  // namespace dtrn::parallel
