// CPU matrix products through OpenBLAS (row-major CBLAS), one call per batch matrix.
#include <cblas.h>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {

void CpuBackend::gemm(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = g.trans_b ? CblasTrans : CblasNoTrans;
  const int lda = static_cast<int>(g.trans_a ? g.m : g.k);
  const int ldb = static_cast<int>(g.trans_b ? g.k : g.n);
  const int ldc = static_cast<int>(g.n);
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  if (c.dtype() == DType::kF64) {
    const double* pa = a.data<double>();
    const double* pb = b.data<double>();
    double* pc = c.data<double>();
    for (int64_t i = 0; i < g.batch; ++i) {
      cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, g.alpha, pa + i * g.stride_a, lda,
                  pb + i * g.stride_b, ldb, g.beta, pc + i * g.stride_c, ldc);
    }
  } else {
    DTRN_CHECK(c.dtype() == DType::kF32, "matmul: the CPU backend computes in f64 or f32, got ",
               dtype_name(c.dtype()));
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    float* pc = c.data<float>();
    for (int64_t i = 0; i < g.batch; ++i) {
      cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<float>(g.alpha), pa + i * g.stride_a,
                  lda, pb + i * g.stride_b, ldb, static_cast<float>(g.beta), pc + i * g.stride_c, ldc);
    }
  }
}

}  // namespace dtrn
