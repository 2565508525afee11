// The Open MPI communicator over CPU tensors (f32, f64, i32, i64). Collectives are MPI's non-blocking
// ones (MPI_Iallreduce, ...); wait() polls them, so a lost or hung rank ends the process through the
// job's Liveness instead of blocking forever (Note [Lost ranks] in lost_rank.h). Errors return from MPI
// (MPI_ERRORS_RETURN) and become that same one-line exit.
//
// MPI is initialised by the first make_mpi_world() of the process and finalised when the process exits
// normally. Built only where MPI was found (DTRN_HAVE_MPI); elsewhere make_mpi_world fails cleanly.
#pragma once

#include <memory>

#include "dtrn/parallel/communicator.h"
#include "dtrn/parallel/lost_rank.h"

namespace dtrn::parallel {

// True when this build has the MPI communicator.
bool mpi_compiled();
// The world of the processes mpirun or srun started; its groups (split) share `liveness`.
std::unique_ptr<Communicator> make_mpi_world(std::shared_ptr<Liveness> liveness);

}  // namespace dtrn::parallel
