// Where this process sits in a job, read from the launcher's environment:
//   mpirun (Open MPI)  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   srun (Slurm)       SLURM_PROCID, SLURM_STEP_NUM_TASKS (set by srun, not by sbatch), SLURM_LOCALID
//   torchrun style     RANK, WORLD_SIZE, LOCAL_RANK, with MASTER_ADDR and MASTER_PORT
// in that order of precedence. MASTER_ADDR / MASTER_PORT, when set, say where rank 0 serves the job's
// store (tcp_store.h); under mpirun and srun they may be left out and the address is shared through MPI.
#pragma once

#include <functional>
#include <string>

#include "dtrn/runtime/status.h"

namespace dtrn::parallel {

enum class Launcher { kNone, kMpirun, kSrun, kEnv };
const char* launcher_name(Launcher launcher);

struct LaunchEnv {
  Launcher launcher = Launcher::kNone;  // kNone: a single process, rank 0 of 1
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;       // the rank among this host's processes: which GPU it takes
  std::string master_addr;  // empty: not set
  int master_port = 0;      // 0: not set
};

using GetEnv = std::function<const char*(const char*)>;
// Fails (InvalidArgument naming the variable) on a variable that is not a number, a rank outside
// [0, world size), or RANK without WORLD_SIZE.
StatusOr<LaunchEnv> read_launch_env(const GetEnv& getenv);
StatusOr<LaunchEnv> read_launch_env();  // from this process's environment

}  // namespace dtrn::parallel
