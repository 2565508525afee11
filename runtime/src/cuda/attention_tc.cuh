// The tile geometry and fragment loads shared by the bf16 tensor-core attention kernels
// (attention_tc_forward.cu, attention_tc_backward.cu).
//
// Tiles are row-major [rows][D] bf16 in shared memory with rows padded to D + 8 elements: a row is then
// 16 bytes (4 banks) further along the banks than the one before, so the 8 row addresses of each
// ldmatrix matrix fall on 8 distinct 16-byte bank groups and the load runs without conflicts. Rows stay
// 16-byte aligned for cp.async. Fragment layouts: Note [mma.sync m16n8k16 fragments].
#pragma once

#include <cstdint>

#include "cuda/attention_common.cuh"
#include "cuda/attention_mma.cuh"

namespace dtrn::cuda {

// Every tensor-core kernel's block owns a tile of 128 rows: query rows (forward, dq) or keys (dk/dv),
// split over its warps in m tiles of 16 rows (the kernels choose 8 warps of one m tile or 4 warps of
// two). The forward walks the keys in K/V tiles of 64 that all its warps share, so each K/V tile staged
// in shared memory serves 128 queries.
constexpr int kTcBlockRows = 128;
constexpr int kTcKvRows = 64;
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
struct TcGeometry {
  static_assert(D == 64 || D == 128, "tensor-core attention serves D = 64 and D = 128");
  static constexpr int kStride = D + 8;  // elements between rows in shared memory
  static constexpr int kKSteps = D / 16;  // 16-wide k steps over the head dim
  static constexpr int kDTiles = D / 8;   // 8-wide n tiles of an output row (o, dq, dk, dv)
};

// Queues cp.async copies, spread over the block's kThreads threads, of rows [0, kRows) of a tile whose
// row r is at gmem + r * gstride; rows at or past `valid` are zero-filled (their source address is row 0,
// never read).
template <int D, int kRows, int kThreads>
__device__ __forceinline__ void tc_stage(Bf16* smem, const Bf16* gmem, int64_t gstride, int valid) {
  constexpr int kPieces = D / 8;  // 16-byte pieces per row
  static_assert(kRows * kPieces % kThreads == 0, "every thread copies the same count");
#pragma unroll
  for (int idx = threadIdx.x; idx < kRows * kPieces; idx += kThreads) {
    const int r = idx / kPieces, c = (idx % kPieces) * 8;
    const bool ok = r < valid;
    cp_async_16(smem + r * TcGeometry<D>::kStride + c, gmem + (ok ? r * gstride + c : 0), ok);
  }
}

// The A fragment of the 16x16 tile at (row0, col0) of a row-major shared tile.
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const Bf16* s, int row0, int col0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4(a, s + (row0 + lane % 16) * TcGeometry<D>::kStride + col0 + (lane / 16) * 8);
}

// The A fragment of the 16x16 tile A[m][k] = X[k][m] at (m0, k0) for a row-major shared X of kStride
// elements per row: ldmatrix.trans of the four 8x8 matrices a[0..3] = (m lo, k lo), (m hi, k lo),
// (m lo, k hi), (m hi, k hi), whose rows in X are k and columns m.
template <int kStride>
__device__ __forceinline__ void load_a_from_cols(uint32_t (&a)[4], const Bf16* s, int m0, int k0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4_trans(a, s + (k0 + lane % 8 + (lane / 16) * 8) * kStride + m0 + ((lane / 8) % 2) * 8);
}

// B fragments with B[k][n] = X[n][k] for the n tiles n0 and n0 + 8 (b[0..1], b[2..3]) and k0..k0+15.
template <int D>
__device__ __forceinline__ void load_b_from_rows(uint32_t (&b)[4], const Bf16* s, int n0, int k0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4(b, s + (n0 + lane % 8 + (lane / 16) * 8) * TcGeometry<D>::kStride + k0 +
                     ((lane / 8) % 2) * 8);
}

// B fragments with B[k][n] = X[k][n] for k0..k0+15 and the n tiles n0 and n0 + 8.
template <int D>
__device__ __forceinline__ void load_b_from_cols(uint32_t (&b)[4], const Bf16* s, int k0, int n0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4_trans(b, s + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * TcGeometry<D>::kStride + n0 +
                           (lane / 16) * 8);
}

// c[mi] (16 x kN each) += the kM m tiles of A (rows row0 + 16 mi of shared s_a, all D columns) times X^T
// for the shared tile s_x with kN rows; each B fragment of X serves every m tile.
template <int D, int kM, int kN>
__device__ __forceinline__ void mma_rows_by_rows_m(float (&c)[kM][kN / 8][4], const Bf16* s_a, int row0,
                                                   const Bf16* s_x) {
#pragma unroll
  for (int kk = 0; kk < TcGeometry<D>::kKSteps; ++kk) {
    uint32_t a[kM][4];
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) load_a<D>(a[mi], s_a, row0 + mi * 16, kk * 16);
#pragma unroll
    for (int np = 0; np < kN / 16; ++np) {
      uint32_t b[4];
      load_b_from_rows<D>(b, s_x, np * 16, kk * 16);
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        mma_bf16(c[mi][2 * np], a[mi], b[0], b[1]);
        mma_bf16(c[mi][2 * np + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

// acc[mi] (16 x D) += W[mi] X for the kM register tiles W[mi] (16 x kK, C fragments rounded to bf16
// here) and the shared tile s_x with kK rows of D columns; each B fragment of X serves every m tile.
template <int D, int kM, int kK>
__device__ __forceinline__ void mma_regs_by_tile_m(float (&acc)[kM][TcGeometry<D>::kDTiles][4],
                                                   const float (&w)[kM][kK / 8][4], const Bf16* s_x) {
#pragma unroll
  for (int ks = 0; ks < kK / 16; ++ks) {
    uint32_t a[kM][4];
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) c_pair_to_a(w[mi][2 * ks], w[mi][2 * ks + 1], a[mi]);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      load_b_from_cols<D>(b, s_x, ks * 16, dp * 16);
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        mma_bf16(acc[mi][2 * dp], a[mi], b[0], b[1]);
        mma_bf16(acc[mi][2 * dp + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

// Stores a warp's C fragments acc (16 rows x D) as bf16 rows: the row lane/4 + 8 * half, times
// factor[half], goes to dst[half] when valid[half].
template <int D>
__device__ __forceinline__ void store_rows(const float (&acc)[TcGeometry<D>::kDTiles][4],
                                           const float (&factor)[2], Bf16* const (&dst)[2],
                                           const bool (&valid)[2]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    if (!valid[half]) continue;
#pragma unroll
    for (int dt = 0; dt < TcGeometry<D>::kDTiles; ++dt) {
      *reinterpret_cast<uint32_t*>(dst[half] + dt * 8 + (lane % 4) * 2) =
          pack_bf16(acc[dt][2 * half] * factor[half], acc[dt][2 * half + 1] * factor[half]);
    }
  }
}

}  // namespace dtrn::cuda
