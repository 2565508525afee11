#include "dtrn/parallel/process_groups.h"

#include <unistd.h>

#include <algorithm>

#include "dtrn/parallel/mpi_communicator.h"
#include "dtrn/parallel/nccl_communicator.h"
#include "dtrn/parallel/tcp_communicator.h"

namespace dtrn::parallel {
namespace {

std::string host_name() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

}  // namespace

StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::FromWorld(std::unique_ptr<Communicator> world, int dp,
                                                                  int tp) {
  std::unique_ptr<ProcessGroups> groups(new ProcessGroups());
  groups->launch_.rank = world->rank();
  groups->launch_.world_size = world->size();
  groups->world_ = std::move(world);
  DTRN_RETURN_IF_ERROR(groups->make_groups(dp, tp));
  return groups;
}

StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Join(const ParallelOptions& options) {
  auto launch = read_launch_env();
  if (!launch.ok()) return launch.status();
  std::unique_ptr<ProcessGroups> groups(new ProcessGroups());
  groups->launch_ = *launch;
  const LaunchEnv& env = groups->launch_;
  if (static_cast<int64_t>(options.dp) * options.tp != env.world_size) {
    return Status::InvalidArgument(
        "parallel.dp x parallel.tp = " + std::to_string(options.dp) + " x " + std::to_string(options.tp) +
        " ranks, but " +
        (env.launcher == Launcher::kNone ? std::string("this is one process (launch with dtrn launch --nproc N, mpirun -np N or srun)")
                                         : std::string(launcher_name(env.launcher)) + " started " +
                                               std::to_string(env.world_size)));
  }
  if (env.world_size == 1) {
    groups->world_ = make_single_process_communicator();
    DTRN_RETURN_IF_ERROR(groups->make_groups(1, 1));
    return groups;
  }
  groups->liveness_ = std::make_shared<Liveness>(env.rank, options.timeout_s);
  const bool via_mpi = env.launcher == Launcher::kMpirun || env.launcher == Launcher::kSrun;
  if (via_mpi && !mpi_compiled()) {
    return Status::FailedPrecondition(std::string("launched by ") + launcher_name(env.launcher) +
                                      " but this dtrn was built without MPI (Debian: libopenmpi-dev)");
  }
  std::unique_ptr<Communicator> mpi = via_mpi ? make_mpi_world(groups->liveness_) : nullptr;

  // The job store: rank 0 serves it; its address comes from MASTER_ADDR/MASTER_PORT or, under MPI, from
  // rank 0 itself.
  std::string address = env.master_addr;
  int port = env.master_port;
  const double connect_timeout_s = std::min(options.timeout_s, 120.0);
  if (env.rank == 0) {
    auto store = TcpStore::Open(0, env.world_size, "127.0.0.1", port, connect_timeout_s);
    if (!store.ok()) return store.status();
    groups->store_ = std::move(*store);
    port = groups->store_->port();
  }
  if (mpi) {
    std::string shared = (address.empty() ? host_name() : address) + " " + std::to_string(port);
    broadcast_string(*mpi, &shared, 0);
    const std::string rank0_host = shared.substr(0, shared.find(' '));
    port = std::stoi(shared.substr(shared.find(' ') + 1));
    // Ranks on rank 0's host reach it on loopback, whatever its name resolves to.
    address = (address.empty() && rank0_host == host_name()) ? "127.0.0.1" : rank0_host;
  }
  if (env.rank != 0) {
    auto store = TcpStore::Open(env.rank, env.world_size, address, port, connect_timeout_s);
    if (!store.ok()) return store.status();
    groups->store_ = std::move(*store);
  }
  groups->liveness_->attach(groups->store_.get());

  if (options.device.is_cuda()) {
    groups->world_ = make_nccl_world(*groups->store_, env.rank, env.world_size, options.device, groups->liveness_);
    groups->bootstrap_ = std::move(mpi);
  } else if (mpi) {
    groups->world_ = std::move(mpi);
  } else {
    // CPU ranks without an MPI launcher: the TCP communicator over the job's store.
    auto tcp = make_tcp_world(*groups->store_, env.rank, env.world_size, address, groups->liveness_, connect_timeout_s);
    if (!tcp.ok()) return tcp.status();
    groups->world_ = std::move(*tcp);
  }
  DTRN_RETURN_IF_ERROR(groups->make_groups(options.dp, options.tp));
  return groups;
}

Status ProcessGroups::make_groups(int dp, int tp) {
  if (dp < 1 || tp < 1 || dp * tp != world_->size()) {
    return Status::InvalidArgument("parallel.dp x parallel.tp = " + std::to_string(dp) + " x " +
                                   std::to_string(tp) + " does not cover the world of " +
                                   std::to_string(world_->size()) + " ranks");
  }
  const int rank = world_->rank();
  // TP innermost (see the header): the TP group of a rank is its block of tp; its DP group, its column.
  tp_ = world_->split(rank / tp, rank % tp, "tp");
  dp_ = world_->split(rank % tp, rank / tp, "dp");
  return Status::Ok();
}

ProcessGroups::~ProcessGroups() {
  // Groups before the world they came from, the world before the store that watches it; the store last
  // says goodbye, so that no rank takes an orderly end for a lost rank.
  dp_.reset();
  tp_.reset();
  world_.reset();
  bootstrap_.reset();
  store_.reset();
}

}  // namespace dtrn::parallel
