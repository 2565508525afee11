// Checks for the two external GPU APIs dtrn calls, one checker each:
//   CUDA_CHECK(expr)    expr returns cudaError_t (runtime API calls, cudaGetLastError after a launch).
//   CUBLAS_CHECK(expr)  expr returns cublasStatus_t (cuBLASLt calls).
// A failure throws dtrn::Error naming the error (cudaErrorMemoryAllocation: out of memory), the failed
// expression, and file:line. Failures of these APIs are neither a caller's bad argument nor a broken dtrn
// invariant (see Note [Two kinds of check] in check.h): they report the environment (driver, memory,
// device state), so the message leads with the API's own words.
//
// Header-light on purpose: only the CUDA runtime and cuBLASLt type headers, so .cu files compiled by nvcc
// (in C++17) and .cc files compiled by the host compiler (C++20) can both include it.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

namespace dtrn::cuda {

// Clears the thread's last CUDA error (non-sticky errors only) and throws.
[[noreturn]] void throw_cuda_error(cudaError_t error, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file,
                                     int line);

}  // namespace dtrn::cuda

#define CUDA_CHECK(expr)                                                      \
  do {                                                                        \
    const cudaError_t dtrn_cuda_err_ = (expr);                                \
    if (dtrn_cuda_err_ != cudaSuccess)                                        \
      ::dtrn::cuda::throw_cuda_error(dtrn_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                         \
  do {                                                                             \
    const cublasStatus_t dtrn_cublas_status_ = (expr);                             \
    if (dtrn_cublas_status_ != CUBLAS_STATUS_SUCCESS)                              \
      ::dtrn::cuda::throw_cublas_error(dtrn_cublas_status_, #expr, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: launch-configuration errors surface here, at the launch that caused them,
// instead of at some later unrelated call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
