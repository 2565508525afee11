// Launchers of the CUDA backend's memory and elementwise kernels (fill_copy.cu, binary.cu, random.cu).
// They take raw device pointers and POD geometry and queue work on `stream`; cuda_backend.cc validates
// tensors and calls them. Every launcher checks its launch (CUDA_CHECK_LAUNCH) before returning.
//
// This interface is C++17 and names no dtrn Tensor on purpose: the .cu files stay quick to compile
// and independent of the C++20 public headers. ElemType mirrors dtrn::DType value for value
// (cuda_backend.cc static_asserts it).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/strided_iter.h"

namespace dtrn::cuda {

enum class ElemType : uint8_t { kF64, kF32, kBF16, kI32, kI64 };
enum class ElemOp : uint8_t { kAdd, kSub, kMul };

// Writes the `elem_bytes`-wide bit pattern (2, 4 or 8 bytes) into n elements at data.
void launch_fill(void* data, int64_t n, int elem_bytes, uint64_t pattern, cudaStream_t stream);

// dst[off_dst] = convert(src[off_src]) over iter (operand 0 = src, 1 = dst); any pair of ElemTypes.
// Float to bfloat16 rounds to nearest even as bf16.h does; f64 and integers reach bf16 through f32.
void launch_copy(const void* src, ElemType src_type, void* dst, ElemType dst_type,
                 const StridedIter<2>& iter, cudaStream_t stream);

// out[i] = a[off_a] op b[off_b] over iter (operand 0 = a, 1 = b), out contiguous; f64, f32 or bf16
// (bf16 computes in f32 and rounds once).
void launch_binary(ElemOp op, ElemType type, const void* a, const void* b, void* out,
                   const StridedIter<2>& iter, cudaStream_t stream);

// out[i] = uniform draw in [a, b) or normal draw (mean a, std b) number (offset + i) of (seed, stream),
// as rng.h defines them, for f64, f32 or bf16 outputs (contiguous).
void launch_fill_random(void* out, ElemType type, int64_t n, bool normal, double a, double b,
                        uint64_t seed, uint64_t rng_stream, uint64_t offset, cudaStream_t stream);

}  // namespace dtrn::cuda
