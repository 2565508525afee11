// Launchers of the CUDA backend's gathers and scatters along one dimension of an [outer, n, inner]
// view (index.cu), with index [m] of i32 or i64. An index outside [0, n) is a broken caller: the kernel
// prints it (index, position, n) and traps, which aborts the CUDA context (checking on the host would
// cost a device synchronisation per call).
//
// index_add is deterministic even with repeated indices (the embedding backward): the positions are
// stably sorted by index (CUB radix sort) and each destination row adds its sources in position
// order, in the compute type, starting from its current value: the CPU's order and arithmetic, so
// f32 and f64 results equal the CPU's bit for bit.
//
// C++17 and free of dtrn::Tensor, like elementwise.h. Every launcher checks its launches.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// out[o, j, :] = x[o, index[j], :] for elements of elem_bytes (2, 4 or 8) bytes, any dtype.
void launch_index_select(const void* x, int elem_bytes, int64_t outer, int64_t n, int64_t inner,
                         const void* index, ElemType index_type, int64_t m, void* out,
                         cudaStream_t stream);

// Bytes of scratch launch_index_add needs (sorted keys and positions, CUB's temporary storage).
size_t index_add_scratch_bytes(int64_t n, int64_t m);
// out[o, index[j], :] += src[o, j, :] for j < m, in place; f64, f32 or bf16. n, m < 2^31.
void launch_index_add(ElemType type, void* out, int64_t outer, int64_t n, int64_t inner,
                      const void* index, ElemType index_type, int64_t m, const void* src,
                      void* scratch, size_t scratch_bytes, cudaStream_t stream);

}  // namespace dtrn::cuda
