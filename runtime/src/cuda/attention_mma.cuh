// The warp-level tensor-core pieces of the bf16 attention kernels (attention_tc_*.cu), as inline PTX:
// cp.async 16-byte copies into shared memory (zero-filling rows outside the sequence), ldmatrix, and
// mma.sync m16n8k16 with bf16 inputs and f32 accumulation.
//
// Note [mma.sync m16n8k16 fragments]
// Lane l of a warp has group g = l / 4 and thread t = l % 4. For D = A B + C with A 16x16 (row-major),
// B 16x8 (k by n) and C, D 16x8 f32:
//   A: a[0] = A[g][2t, 2t+1]   a[1] = A[g+8][2t, 2t+1]   a[2] = A[g][2t+8, +9]   a[3] = A[g+8][2t+8, +9]
//   B: b[0] = B[2t, 2t+1][g]   b[1] = B[2t+8, 2t+9][g]
//   C: c[0], c[1] = C[g][2t, 2t+1]   c[2], c[3] = C[g+8][2t, 2t+1]
// (pairs are two bf16 in one 32-bit register, the lower index in the low half). Two consequences the
// kernels use:
//   * ldmatrix.x4 hands lane l, for each of four 8x8 matrices, the pair at row l/4, columns 2(l%4) and
//     2(l%4)+1 of that matrix; lanes 8i..8i+7 give the row addresses of matrix i. So an A tile at
//     (r0, c0) of a row-major array comes from row r0 + l%16, column c0 + (l/16)*8; a B operand whose
//     columns n are rows of a row-major array X (B[k][n] = X[n][k], as K in Q K^T) from row
//     n0 + l%8 + (l/16)*8, column k0 + ((l/8)%2)*8, giving b[0], b[1] for n0 and b[0], b[1] for n0 + 8;
//     and a B operand stored k-major (B[k][n] = X[k][n], as V in P V) with ldmatrix.trans from row
//     k0 + l%8 + ((l/8)%2)*8, column n0 + (l/16)*8, again giving n0's pair, then n0 + 8's.
//   * The C fragments of two adjacent 16x8 tiles, rounded to bf16, are exactly the A fragment of the
//     16x16 tile they form: the probabilities P = softmax(Q K^T) feed P V without leaving registers.
#pragma once

#include <cstdint>

namespace dtrn::cuda {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zeros instead when !valid (gmem must still be a valid
// address then: the hardware reads nothing, but the operand is formed).
__device__ __forceinline__ void cp_async_16(uint32_t smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  cp_async_16(shared_address(smem), gmem, valid);
}

__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(smem)),
               "l"(gmem), "r"(valid ? 4 : 0)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most `kPending` committed groups of this thread are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem)));
}

// c += a b for one 16x16 (a) by 16x8 (b0, b1) product.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the special-function unit, results below 2^-126 flushed to zero: one MUFU.EX2 where exp2f
// adds the scaling of subnormal results around it. Probabilities that small vanish in bf16 anyway.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats rounded to nearest-even bf16, `lo` in the low half (the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The A fragment of the 16x16 tile formed by the C fragments of two adjacent 16x8 tiles.
__device__ __forceinline__ void c_pair_to_a(const float (&left)[4], const float (&right)[4],
                                            uint32_t (&a)[4]) {
  a[0] = pack_bf16(left[0], left[1]);
  a[1] = pack_bf16(left[2], left[3]);
  a[2] = pack_bf16(right[0], right[1]);
  a[3] = pack_bf16(right[2], right[3]);
}

}  // namespace dtrn::cuda
