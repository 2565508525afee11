#include "cuda/cuda_check.h"

#include "dtrn/runtime/check.h"

namespace dtrn::cuda {

// A failed CUDA or cuBLASLt call names its call site: the call is dtrn's, whoever caused the failure.
void throw_cuda_error(cudaError_t error, const char* expr, const char* file, int line) {
  // Reset the thread's last-error slot so the next unrelated check does not report this one again.
  // Sticky errors (a faulting kernel) survive this: the context is unusable and every later call fails.
  cudaGetLastError();
  throw_check_failure(file, line, expr,
                      str_cat("CUDA error ", cudaGetErrorName(error), " (", cudaGetErrorString(error),
                              ") in ", expr, " [", file, ":", line, "]"),
                      false);
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw_check_failure(file, line, expr,
                      str_cat("cuBLASLt error ", cublasLtGetStatusName(status), " (",
                              cublasLtGetStatusString(status), ") in ", expr, " [", file, ":", line, "]"),
                      false);
}

}  // namespace dtrn::cuda
