// A self-test of wgmma.cuh's layouts, independent of attention: one warpgroup computes C = A B from
// row-major global operands through the swizzled shared layout, the matrix descriptors and (optionally)
// register A fragments, and writes C from its accumulators by the fragment layout written down in
// wgmma.cuh. tests/runtime/cuda_wgmma_test.cc compares it with a host product: when a descriptor, the
// swizzle or a fragment layout is wrong, this says so before the attention tests do.
//
// C++17 and free of dtrn's Tensor, like elementwise.h. Runs only where wgmma_available (wgmma_support.h).
#pragma once

#include <cuda_runtime_api.h>

namespace dtrn::cuda {

struct WgmmaCheckShape {
  int n = 64;                    // 64 or 128 (wgmma's N)
  int k = 16;                    // a multiple of 16 up to 128: k / 16 chained instructions
  bool a_in_registers = false;   // A as register fragments (the RS form) instead of shared memory (SS)
  bool b_mn_major = false;       // B stored [k][n] (MN-major, transpose flag) instead of [n][k] (K-major)
};

// c [64][n] f32 = a [64][k] times B, where b holds B as [n][k] (B^T row-major, K-major) or [k][n]
// (MN-major); a and b are bf16 bit patterns. Device pointers; queued on `stream`. Throws dtrn::Error
// (cudaErrorInvalidValue) for a shape outside the ranges above.
void launch_wgmma_check(const WgmmaCheckShape& shape, const void* a, const void* b, float* c,
                        cudaStream_t stream);

}  // namespace dtrn::cuda
