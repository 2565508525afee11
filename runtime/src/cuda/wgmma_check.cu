// wgmma_check.h: one warpgroup, one block. The operands are copied element by element into the layout
// of Note [wgmma operand layout: 128-byte swizzle] (wgmma.cuh) with plain stores, so the copy itself
// depends only on swizzled_offset; the accumulators start as NaN, so a first instruction that does not
// overwrite them (scale-d) shows.
#include "cuda/cuda_check.h"
#include "cuda/wgmma.cuh"
#include "cuda/wgmma_check.h"

namespace dtrn::cuda {
namespace {

constexpr int kMaxK = 128;
constexpr int kThreads = 128;
// A [64][128] and B (at most 128 x 128) bf16 tiles, and the slack that aligns the first.
constexpr int kSmem = (64 * kMaxK + kMaxK * kMaxK) * 2 + kSwizzleAtomBytes;

template <int N, bool kARegisters, WgmmaMajor kB>
__global__ void __launch_bounds__(kThreads)
    wgmma_check_kernel(const uint16_t* __restrict__ a, const uint16_t* __restrict__ b, int k,
                       float* __restrict__ c) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  unsigned char* s_a = align_to_swizzle_atom(smem_raw);
  const int k_cols = (k + 63) / 64 * 64;  // A's columns in whole 64-column blocks
  unsigned char* s_b = s_a + 64 * k_cols * 2;  // a multiple of 8 KiB: still on a boundary
  const int t = threadIdx.x;
  for (int i = t; i < 64 * k; i += kThreads) {
    *reinterpret_cast<uint16_t*>(s_a + swizzled_offset(64, i / k, i % k)) = a[i];
  }
  for (int i = t; i < N * k; i += kThreads) {
    const uint32_t offset = kB == WgmmaMajor::kK ? swizzled_offset(N, i / k, i % k)   // b [n][k]
                                                 : swizzled_offset(k, i / N, i % N);  // b [k][n]
    *reinterpret_cast<uint16_t*>(s_b + offset) = b[i];
  }
  fence_proxy_async();
  __syncthreads();

  const int w = t / 32, lane = t % 32, g = lane / 4, q = lane % 4;
  const auto pair = [&](int r, int col) {
    return static_cast<uint32_t>(a[r * k + col]) | static_cast<uint32_t>(a[r * k + col + 1]) << 16;
  };
  uint32_t frag[kMaxK / 16][4] = {};
#pragma unroll
  for (int s = 0; s < kMaxK / 16; ++s) {
    if (kARegisters && 16 * s < k) {
      const int r = 16 * w + g, col = 16 * s + 2 * q;
      frag[s][0] = pair(r, col);
      frag[s][1] = pair(r + 8, col);
      frag[s][2] = pair(r, col + 8);
      frag[s][3] = pair(r + 8, col + 8);
    }
  }
  float d[N / 8][4];
#pragma unroll
  for (int j = 0; j < N / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) d[j][e] = __int_as_float(0x7fc00000);
  }

  const uint32_t a_tile = shared_address(s_a), b_tile = shared_address(s_b);
  wgmma_fence_operands(d);
  wgmma_fence_operands(frag);
  wgmma_fence();
#pragma unroll
  for (int s = 0; s < kMaxK / 16; ++s) {
    if (16 * s < k) {
      const uint64_t b_desc = kB == WgmmaMajor::kK ? k_major_descriptor(b_tile, N, 0, 16 * s)
                                                   : mn_major_descriptor(b_tile, k, 16 * s);
      if constexpr (kARegisters) {
        wgmma_rs<N, kB>(d, frag[s], b_desc, s > 0);
      } else {
        wgmma_ss<N, kB>(d, k_major_descriptor(a_tile, 64, 0, 16 * s), b_desc, s > 0);
      }
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  wgmma_fence_operands(d);
#pragma unroll
  for (int j = 0; j < N / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      c[(16 * w + g + 8 * (e / 2)) * N + 8 * j + 2 * q + e % 2] = d[j][e];
    }
  }
#endif
}

template <int N, bool kARegisters, WgmmaMajor kB>
void launch(int k, const void* a, const void* b, float* c, cudaStream_t stream) {
  const auto kernel = &wgmma_check_kernel<N, kARegisters, kB>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  kernel<<<1, kThreads, kSmem, stream>>>(static_cast<const uint16_t*>(a),
                                         static_cast<const uint16_t*>(b), k, c);
  CUDA_CHECK_LAUNCH();
}

template <int N>
void launch_n(const WgmmaCheckShape& shape, const void* a, const void* b, float* c,
              cudaStream_t stream) {
  if (shape.a_in_registers) {
    if (shape.b_mn_major) {
      launch<N, true, WgmmaMajor::kMn>(shape.k, a, b, c, stream);
    } else {
      launch<N, true, WgmmaMajor::kK>(shape.k, a, b, c, stream);
    }
  } else if (shape.b_mn_major) {
    launch<N, false, WgmmaMajor::kMn>(shape.k, a, b, c, stream);
  } else {
    launch<N, false, WgmmaMajor::kK>(shape.k, a, b, c, stream);
  }
}

}  // namespace

void launch_wgmma_check(const WgmmaCheckShape& shape, const void* a, const void* b, float* c,
                        cudaStream_t stream) {
  if ((shape.n != 64 && shape.n != 128) || shape.k < 16 || shape.k > kMaxK || shape.k % 16 != 0) {
    CUDA_CHECK(cudaErrorInvalidValue);
  }
  if (shape.n == 64) {
    launch_n<64>(shape, a, b, c, stream);
  } else {
    launch_n<128>(shape, a, b, c, stream);
  }
}

}  // namespace dtrn::cuda
