// The NCCL communicator over CUDA tensors (f32, f64, bf16, i32, i64). Collectives run on the
// communicator's own stream: each waits (an event) for the work the runtime queued on the device's
// compute stream before it, and wait() makes the compute stream wait for the collective, so the host
// never blocks and computation queued meanwhile overlaps the communication (Note [One stream per device]
// in runtime/src/cuda/cuda_context.h). A watchdog thread polls outstanding collectives and NCCL's
// asynchronous errors and ends the process through the job's Liveness when a rank is lost or a collective
// outlives the timeout (Note [Lost ranks] in lost_rank.h).
//
// Built where NCCL and the CUDA backend were found (DTRN_HAVE_NCCL); elsewhere make_nccl_world fails
// cleanly. Keep NCCL_NVLS_ENABLE=0 on machines whose NVLink multicast is off.
#pragma once

#include <memory>

#include "dtrn/parallel/communicator.h"
#include "dtrn/parallel/lost_rank.h"
#include "dtrn/parallel/tcp_store.h"

namespace dtrn::parallel {

bool nccl_compiled();
// The world of `world_size` ranks on `device` (one GPU per rank); rank 0 creates NCCL's unique id and
// shares it through `store`.
std::unique_ptr<Communicator> make_nccl_world(TcpStore& store, int rank, int world_size, Device device,
                                              std::shared_ptr<Liveness> liveness);

}  // namespace dtrn::parallel
