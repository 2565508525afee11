// DTRN_HOST_DEVICE marks a function compiled for both the host and the GPU: __host__ __device__ under
// nvcc, nothing for the host compiler. For the few headers (Philox, strided iteration) that both sides
// share.
#pragma once

#if defined(__CUDACC__)
#define DTRN_HOST_DEVICE __host__ __device__
#else
#define DTRN_HOST_DEVICE
#endif
