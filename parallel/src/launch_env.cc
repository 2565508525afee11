#include "dtrn/parallel/launch_env.h"

#include <cstdlib>

namespace dtrn::parallel {
namespace {

// Reads variable `name` as a non-negative int into *out; absent leaves *out alone and returns false.
StatusOr<bool> read_int(const GetEnv& getenv, const char* name, int* out) {
  const char* text = getenv(name);
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (*end != '\0' || v < 0 || v > (1 << 24)) {
    return Status::InvalidArgument(std::string(name) + ": '" + text + "' is not a rank or size");
  }
  *out = static_cast<int>(v);
  return true;
}

}  // namespace

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::kNone: return "none";
    case Launcher::kMpirun: return "mpirun";
    case Launcher::kSrun: return "srun";
    case Launcher::kEnv: return "RANK/WORLD_SIZE";
  }
  return "?";
}

StatusOr<LaunchEnv> read_launch_env(const GetEnv& getenv) {
  struct Names {
    Launcher launcher;
    const char *rank, *size, *local;
  };
  static const Names kSources[] = {
      {Launcher::kMpirun, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {Launcher::kSrun, "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"},
      {Launcher::kEnv, "RANK", "WORLD_SIZE", "LOCAL_RANK"},
  };
  LaunchEnv env;
  for (const Names& n : kSources) {
    int size = 0;
    auto has_size = read_int(getenv, n.size, &size);
    if (!has_size.ok()) return has_size.status();
    auto has_rank = read_int(getenv, n.rank, &env.rank);
    if (!has_rank.ok()) return has_rank.status();
    if (!*has_size) {
      if (*has_rank && n.launcher == Launcher::kEnv) {
        return Status::InvalidArgument(std::string(n.rank) + " is set but " + n.size + " is not");
      }
      env.rank = 0;
      continue;
    }
    env.launcher = n.launcher;
    env.world_size = size;
    auto local = read_int(getenv, n.local, &env.local_rank);
    if (!local.ok()) return local.status();
    if (env.world_size < 1 || env.rank >= env.world_size) {
      return Status::InvalidArgument(std::string(n.rank) + "=" + std::to_string(env.rank) + " is not below " +
                                     n.size + "=" + std::to_string(env.world_size));
    }
    break;
  }
  if (const char* addr = getenv("MASTER_ADDR"); addr != nullptr) env.master_addr = addr;
  auto port = read_int(getenv, "MASTER_PORT", &env.master_port);
  if (!port.ok()) return port.status();
  if (env.launcher == Launcher::kEnv && env.world_size > 1 && (env.master_addr.empty() || env.master_port == 0)) {
    return Status::InvalidArgument("RANK/WORLD_SIZE launch: MASTER_ADDR and MASTER_PORT must name rank 0's "
                                   "host and a free port");
  }
  return env;
}

StatusOr<LaunchEnv> read_launch_env() {
  return read_launch_env([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace dtrn::parallel
