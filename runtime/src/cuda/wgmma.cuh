// Hopper's warpgroup matrix multiply (PTX `wgmma.mma_async`, sm_90a only) for bf16 operands and f32
// accumulators, as thin inline-PTX helpers: the one shared-memory operand layout dtrn uses, its matrix
// descriptors, the MMA forms (A from shared memory or from registers, B from shared memory) and the
// fences around them. Every function here must be called by all 128 threads of a warpgroup (4 aligned
// warps) together, with the same arguments where they are uniform (descriptors, flags). Callers compile
// their uses only under __CUDA_ARCH_FEAT_SM90_ALL (CMake builds these files for sm_90a alone).
//
// Note [wgmma operand layout: 128-byte swizzle]
// A tile of R rows by C bf16 columns (R a multiple of 8, C a multiple of 64) is stored as C / 64 column
// blocks of R x 64 elements, block after block, each row of a block one 128-byte line, with the 16-byte
// chunk j of row r (elements 8j .. 8j + 7 of the block) at chunk position j ^ (r % 8). Byte offset of
// element (r, c) from the tile's start:
//     (c / 64) * R * 128  +  r * 128  +  (((c % 64) / 8) ^ (r % 8)) * 16  +  (c % 8) * 2.
// This is wgmma's 128-byte swizzle mode: the hardware XORs address bits [4, 7) with bits [7, 10) of the
// absolute shared address it computes, so the tile must start on a 1024-byte boundary (8 lines, one
// repeat of the pattern); then the formula above and the hardware agree and every descriptor below has
// base offset 0. Blocks are R * 128 bytes, a multiple of 1024, so each block starts on a boundary too.
// Loads of a row's eight chunks spread over all 32 banks, and so do the hardware's reads of 8 rows.
// The same stored tile serves two operand roles (PTX ISA, "Shared Memory Matrix Layout", the canonical
// layouts with T = 8 bf16 per 16 bytes):
//   K-major: rows are M (for A) or N (for B), columns are K, as Q and K in S = Q K^T. The 16-wide k step
//     at column k0 starts at block k0 / 64, byte (k0 % 64) * 2 of row 0; canonical
//     ((8, m), (T, 2)) : ((8T, SBO), (1, T)) with SBO = 1024 (8 rows of 128 bytes) and LBO unused (the
//     16 columns never leave one 128-byte line). A start 32, 64 or 96 bytes into the line is legal: the
//     hardware swizzles the addresses it forms, and bits [7, 10) of the start are still 0.
//   MN-major (with the transpose flag): rows are K, columns are N (or M), as V in O = P V (keys by
//     head dims). The k step at row k0 starts at row k0 (k0 * 128 bytes); canonical
//     ((T, 8, n), (8, k)) : ((1, T, LBO), (8T, SBO)) with SBO = 1024 (the next 8 rows of K) and
//     LBO = R * 128 (the next block of 64 columns of N, used when N = 128). An operand of N = 32
//     columns starting at column 32 starts 64 bytes into the line, by the reasoning of the K-major
//     start above. A is stored this way only by the fused backward (dS^T as dQ's A, A's rows keys).
//
// Note [wgmma m64nNk16 fragments]
// Thread t of the warpgroup is lane l = t % 32 of warp w = t / 32; g = l / 4, q = l % 4. Warp w owns rows
// 16w .. 16w + 15 of the 64-row tile, exactly as one mma.sync m16n8k16 warp owns its 16 rows (Note
// [mma.sync m16n8k16 fragments]):
//   accumulator D (64 x N f32), d[j][0..3] for j = 0 .. N/8 - 1:
//     d[j][0], d[j][1] = D[16w + g][8j + 2q, 8j + 2q + 1]
//     d[j][2], d[j][3] = D[16w + g + 8][8j + 2q, 8j + 2q + 1]
//   A from registers (64 x 16 bf16, pairs packed low column first), a[0..3]:
//     a[0] = A[16w + g][2q, 2q+1]   a[1] = A[16w + g + 8][2q, 2q+1]
//     a[2] = A[16w + g][2q+8, 2q+9] a[3] = A[16w + g + 8][2q+8, 2q+9]
// So the accumulator columns 16s .. 16s + 15, d[2s] and d[2s + 1] rounded to bf16 by c_pair_to_a, are the
// A fragment of k step s: S's accumulators become P's A operand without leaving registers.
//
// Ordering (PTX ISA, "wgmma.fence", "Asynchronous proxy"): shared memory written by ordinary stores or
// cp.async (the generic proxy) is made visible to wgmma (the async proxy) by fence_proxy_async() in every
// writing thread, then a barrier; or, where the writes reach the reader through an mbarrier (the
// warp-specialized kernels' load ring), by fence_proxy_async() in the reading thread once its wait
// returned (wait_loaded, load_ring.cuh). wgmma_fence() must come after the last write of any register a
// following wgmma reads (accumulators, A fragments) and before that wgmma. wgmma_wait<0>() must come
// before accumulators are read; wgmma_fence_operands() pins, for the compiler, register reads and writes
// to their side of the fences (the asm statements of the fences do not name the registers).
#pragma once

#include <cstdint>

#include "cuda/attention_mma.cuh"

namespace dtrn::cuda {

// Operand B's storage (Note [wgmma operand layout: 128-byte swizzle]); the value is wgmma's transpose flag.
enum class WgmmaMajor : int { kK = 0, kMn = 1 };

// Tiles in the layout of the Note start on this boundary.
constexpr int kSwizzleAtomBytes = 1024;

// The first kSwizzleAtomBytes boundary at or after p, a shared-memory pointer: dynamic shared memory is
// only guaranteed 16-byte alignment, so a kernel asks for kSwizzleAtomBytes more and aligns here.
__device__ __forceinline__ unsigned char* align_to_swizzle_atom(unsigned char* p) {
  return p + (kSwizzleAtomBytes - shared_address(p) % kSwizzleAtomBytes) % kSwizzleAtomBytes;
}

// Byte offset of element (r, c) in a tile of `rows` rows in the layout of the Note.
__device__ __forceinline__ uint32_t swizzled_offset(int rows, int r, int c) {
  return static_cast<uint32_t>((c / 64) * rows * 128 + r * 128 + (((c % 64) / 8) ^ (r % 8)) * 16 +
                               (c % 8) * 2);
}

// The 64-bit matrix descriptor: start address, leading and stride byte offsets (each >> 4, 14 bits) and
// swizzle mode 1 (128 bytes) in bits 62-63; base offset (bits 49-51) 0, as the Note explains. `offset`
// (bytes, a multiple of 16) is added to the start field after the tile's own: the kernels pass the tile
// (a runtime address, one per operand) and the step's offset (a constant once their loops unroll), so
// that ptxas builds the tile's fields once and each step's descriptor with one add. Nsight Compute had
// the masks and shifts of a descriptor built whole per wgmma (six uniform-datapath instructions, two
// descriptors an SS product) as a third of the consumer warps' stall samples in the fused backward.
// The sum cannot carry out of the 14 bits: shared addresses stay below 2^18 bytes.
__device__ __forceinline__ uint64_t wgmma_descriptor(uint32_t tile, uint32_t offset, uint32_t lbo,
                                                     uint32_t sbo) {
  const uint32_t lo = (((tile & 0x3ffffu) >> 4) | ((lbo & 0x3ffffu) >> 4) << 16) + (offset >> 4);
  const uint32_t hi = ((sbo & 0x3ffffu) >> 4) | 1u << 30;
  return static_cast<uint64_t>(hi) << 32 | lo;
}

// K-major operand: rows row0 .. of the tile at shared address `tile` (`rows` rows), columns k0 .. k0+15
// (k0 a multiple of 16, row0 of 8).
__device__ __forceinline__ uint64_t k_major_descriptor(uint32_t tile, int rows, int row0, int k0) {
  return wgmma_descriptor(tile, (k0 / 64) * rows * 128 + row0 * 128 + (k0 % 64) * 2, 16, 1024);
}

// MN-major operand: rows (K) k0 .. k0 + 15 of the tile at shared address `tile` (`rows` rows), its
// columns from col0 (0, or 32 for an operand 32 columns wide) on.
__device__ __forceinline__ uint64_t mn_major_descriptor(uint32_t tile, int rows, int k0,
                                                        int col0 = 0) {
  return wgmma_descriptor(tile, k0 * 128 + col0 * 2, rows * 128, 1024);
}

// Queues cp.async copies, spread over kThreads threads (thread index `tid`), of rows [0, kRows) of a
// kCols-column tile whose row r is at gmem + r * gstride, into the layout of the Note at `tile`; rows at
// or past `valid` are zero-filled (their source address is row 0, never read). A thread copies one
// 16-byte column piece c of rows r0, r0 + kRowStep, ...: with kRowStep a multiple of 8 the piece's
// swizzle (r % 8) stays the same, so copy i lies 128 i kRowStep bytes after the first in shared memory
// and i kRowStep rows after it in global memory (index arithmetic per copy, divisions included, was 36
// instructions a copy: 9% of the dk/dv kernel's issued instructions, a third of the forward's). The
// loop stays rolled: the producer warpgroups that call this run on few registers, and unrolled, the
// forward's spilled at D = 128.
template <int kCols, int kRows, int kThreads>
__device__ __forceinline__ void stage_swizzled(unsigned char* tile, const void* gmem, int64_t gstride,
                                               int valid, int tid) {
  constexpr int kChunks = kCols / 8;  // 16-byte pieces per row
  constexpr int kRowStep = kThreads / kChunks;
  static_assert(kCols % 64 == 0 && kRows % 8 == 0, "whole 128-byte lines and 8-row groups");
  static_assert(kThreads % kChunks == 0 && kRowStep % 8 == 0 && kRows % kRowStep == 0,
                "every thread copies the same count of pieces that share a swizzle");
  const auto* src = static_cast<const uint16_t*>(gmem);
  // 32-bit offsets: a tile spans at most kRows rows of gstride elements.
  const int c = (tid % kChunks) * 8, r0 = tid / kChunks;
  const int step = kRowStep * static_cast<int>(gstride);
  const int offset0 = r0 * static_cast<int>(gstride) + c;
  const uint32_t dst0 = shared_address(tile) + swizzled_offset(kRows, r0, c);
#pragma unroll 1
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const bool ok = r0 + i * kRowStep < valid;
    cp_async_16(dst0 + i * kRowStep * 128, src + (ok ? offset0 + i * step : 0), ok);
  }
}

// Orders the shared-memory writes this thread made, or acquired through a barrier (stores, landed
// cp.async), before its later wgmma reads.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

// Closes the group of the wgmma operations issued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

// Waits until at most kPending committed groups are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

template <int kTiles>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[kTiles][4]) {
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
  }
}

template <int kSteps>
__device__ __forceinline__ void wgmma_fence_operands(uint32_t (&a)[kSteps][4]) {
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[s][e])::"memory");
  }
}

// The accumulator operands of one instruction: "{%0, ..., %31}" for N = 64, "{%0, ..., %63}" for 128.
#define DTRN_WGMMA_D32                                                                        \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define DTRN_WGMMA_D64                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "   \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "    \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, " \
  "%57, %58, %59, %60, %61, %62, %63}"
#define DTRN_WGMMA_F4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define DTRN_WGMMA_F32                                                                            \
  DTRN_WGMMA_F4(0), DTRN_WGMMA_F4(1), DTRN_WGMMA_F4(2), DTRN_WGMMA_F4(3), DTRN_WGMMA_F4(4),       \
      DTRN_WGMMA_F4(5), DTRN_WGMMA_F4(6), DTRN_WGMMA_F4(7)
#define DTRN_WGMMA_F64                                                                             \
  DTRN_WGMMA_F32, DTRN_WGMMA_F4(8), DTRN_WGMMA_F4(9), DTRN_WGMMA_F4(10), DTRN_WGMMA_F4(11),        \
      DTRN_WGMMA_F4(12), DTRN_WGMMA_F4(13), DTRN_WGMMA_F4(14), DTRN_WGMMA_F4(15)

// d (64 x N) = A B + (accumulate ? d : 0), A (64 x 16) K-major in shared memory, B (16 x N) in shared
// memory stored as kB says; N = 64 or 128. Asynchronous: see the ordering rules of the Note.
template <int N, WgmmaMajor kB>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(N == 64 || N == 128, "the kernels use N = 64 and N = 128");
  constexpr int kTransB = static_cast<int>(kB);
  if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " DTRN_WGMMA_D32
        ", %32, %33, p, 1, 1, 0, %35;\n}\n"
        : DTRN_WGMMA_F32
        : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransB)
        : "memory");
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DTRN_WGMMA_D64
        ", %64, %65, p, 1, 1, 0, %67;\n}\n"
        : DTRN_WGMMA_F64
        : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransB)
        : "memory");
  }
}

// d (64 x N) = A B + (accumulate ? d : 0), A (64 x 16) from registers in the fragment layout of the
// Note, B (16 x N) in shared memory stored as kB says; N = 64 or 128.
template <int N, WgmmaMajor kB>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b,
                                         bool accumulate) {
  static_assert(N == 64 || N == 128, "the kernels use N = 64 and N = 128");
  constexpr int kTransB = static_cast<int>(kB);
  if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " DTRN_WGMMA_D32
        ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
        : DTRN_WGMMA_F32
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)),
          "n"(kTransB)
        : "memory");
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DTRN_WGMMA_D64
        ", {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
        : DTRN_WGMMA_F64
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)),
          "n"(kTransB)
        : "memory");
  }
}

// d (64 x 32) = A B + (accumulate ? d : 0), A (64 x 16) and B (16 x 32) both MN-major in shared memory
// (the fused backward's dQ = dS K, A read from dS^T).
__device__ __forceinline__ void wgmma_ss_mn_n32(float (&d)[4][4], uint64_t a, uint64_t b,
                                                bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
      ", %16, %17, p, 1, 1, 1, 1;\n}\n"
      : DTRN_WGMMA_F4(0), DTRN_WGMMA_F4(1), DTRN_WGMMA_F4(2), DTRN_WGMMA_F4(3)
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate))
      : "memory");
}

#undef DTRN_WGMMA_D32
#undef DTRN_WGMMA_D64
#undef DTRN_WGMMA_F4
#undef DTRN_WGMMA_F32
#undef DTRN_WGMMA_F64

}  // namespace dtrn::cuda
