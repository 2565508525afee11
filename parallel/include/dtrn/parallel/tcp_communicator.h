// The TCP communicator over CPU tensors (f32, f64, i32, i64): the collectives of a job whose ranks
// were started with plain RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT variables (torchrun style, or a
// dtrn agent) rather than by mpirun or srun, so that CPU ranks need no MPI launcher, as gloo serves
// PyTorch.
//
// Topology: a full mesh of TCP connections, one per pair of ranks, set up through the job's store
// (tcp_store.h): each rank listens on a free port, publishes where it listens, and connects to
// every lower rank. Sub-groups (split) use the connections of the world they came from. Algorithms:
// all-reduce is a ring reduce-scatter followed by a ring all-gather (bandwidth-optimal, as NCCL's
// and Open MPI's ring); broadcast is a star from the root. With 2 ranks every element of an
// all-reduce is a + b on both ranks, the same as Open MPI's (float addition commutes); with more
// ranks the order of the partial sums follows the ring, so results agree with MPI's to rounding.
//
// Each collective runs to completion on the calling thread when it is issued (the Work it returns
// is already done): one thread issues all of a process's collectives in the job's common order
// (communicator.h), so the messages on a connection arrive in the order both ends expect, whichever
// group they belong to. Waiting never blocks without bound: a peer whose connection closes is a
// lost rank at once, and the job's Liveness decides the rest (Note [Lost ranks] in lost_rank.h).
#pragma once

#include <memory>
#include <string>

#include "dtrn/parallel/communicator.h"
#include "dtrn/parallel/lost_rank.h"
#include "dtrn/parallel/tcp_store.h"

namespace dtrn::parallel {

// Joins the world of `world_size` ranks through `store` (every rank calls it; it returns once every
// pair is connected). `master_addr` is how this rank reached rank 0's store: ranks on rank 0's host
// are reached through it from other hosts, ranks on this host through loopback, the others at the
// address they reach rank 0 from. Fails (IoError naming the rank and address) when a peer cannot be
// reached within `timeout_s`.
StatusOr<std::unique_ptr<Communicator>> make_tcp_world(TcpStore& store, int rank, int world_size,
                                                       const std::string& master_addr,
                                                       std::shared_ptr<Liveness> liveness,
                                                       double timeout_s);

}  // namespace dtrn::parallel
