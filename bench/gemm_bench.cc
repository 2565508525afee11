// gemm_bench: the throughput of dtrn's GPU matrix products (matmul() -> cuBLASLt) at a square 4096^3 and
// at the shapes of a SmolLM-360M training step (d_model 960, 15 heads of 64 with 5 KV heads, FFN 2560,
// vocab 49152; 8 x 2048 tokens), forward and the two backward products of the largest layer. Then the
// router's last layer at the 360m preset's 2 x 8192 tokens (R = d_model / 2 = 480, 2 logits): its three
// products through the backend's dispatch (skinny_gemm.cu unless DTRN_SKINNY_GEMM=0) beside the same
// product straight through cuBLASLt, in ms and in GB/s of operands read once and the result written.
// Times each product with CUDA events on dtrn's own stream, reports the median of 20 runs after 3 warm-up
// runs, in TFLOP/s (2 M N K per product). Exits 0 with a message where no GPU or no CUDA backend exists.
#include <cstdio>
#include <string>
#include <vector>

#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/tensor.h"
#include "gpu_bench_main.h"

#ifdef DTRN_WITH_CUDA
#include <cuda_runtime_api.h>

#include "../runtime/src/cuda/caching_allocator.h"
#include "../runtime/src/cuda/cuda_check.h"
#include "cuda_timing.h"  // median_ms: CUDA events on dtrn's stream, so they bracket exactly the product
// White-box too: the backend's gemm (the dispatch) and cuBLASLt's entry, for the router's products.
#include "backend.h"
#include "cuda/cublaslt_gemm.h"
#endif

namespace {

#ifdef DTRN_WITH_CUDA
using dtrn::DType;
using dtrn::Tensor;

using dtrn::bench::kRuns;
using dtrn::bench::median_ms;

struct Case {
  std::string name;
  int64_t m, n, k;
  bool trans_a, trans_b;
  DType dtype;
};

Tensor operand(int64_t rows, int64_t cols, bool transposed, DType dtype, uint64_t seed) {
  const dtrn::Shape shape = transposed ? dtrn::Shape{cols, rows} : dtrn::Shape{rows, cols};
  return Tensor::uniform(shape, -1, 1, seed, 0, 0, dtype, dtrn::Device::cuda(0));
}

// Median milliseconds of matmul(a, b) with the case's transposes.
double time_case(const Case& c) {
  Tensor a = operand(c.m, c.k, c.trans_a, c.dtype, 1), b = operand(c.k, c.n, c.trans_b, c.dtype, 2);
  return median_ms([&] { Tensor out = dtrn::matmul(a, b, c.trans_a, c.trans_b); });
}

struct RouterCase {
  std::string name;
  dtrn::GemmArgs args;
  DType c_dtype;
};

// The router's last linear layer, z = silu(h1) W2^T + b2 with W2 [2, R] (model/src/blocks.cc), at the
// 360m preset's training size: the forward, the input gradient and the weight gradient (accumulated
// into its f32 buffer, beta = 1), bf16 operands. Each through the backend's gemm and through cuBLASLt.
void run_router() {
  constexpr int64_t kTokens = 2 * 8192, kRouter = 960 / 2;
  const auto args = [](int64_t m, int64_t n, int64_t k, bool ta, bool tb, double beta) {
    dtrn::GemmArgs g;
    g.m = m;
    g.n = n;
    g.k = k;
    g.trans_a = ta;
    g.trans_b = tb;
    g.beta = beta;
    return g;
  };
  const std::vector<RouterCase> cases = {
      {"router z = h W2^T", args(kTokens, 2, kRouter, false, true, 0.0), DType::kBF16},
      {"router dh = dz W2", args(kTokens, kRouter, 2, false, false, 0.0), DType::kBF16},
      {"router dW2 += dz^T h (f32)", args(2, kRouter, kTokens, true, false, 1.0), DType::kF32},
  };
  std::printf("\n%-30s %8s %8s %8s %12s %12s %8s %12s\n", "router product", "M", "N", "K", "dispatch ms",
              "cuBLASLt ms", "ratio", "dispatch GB/s");
  dtrn::Backend& backend = dtrn::backend_for(dtrn::Device::cuda(0));
  for (const RouterCase& c : cases) {
    const dtrn::GemmArgs& g = c.args;
    Tensor a = operand(g.m, g.k, g.trans_a, DType::kBF16, 3), b = operand(g.k, g.n, g.trans_b, DType::kBF16, 4);
    Tensor out = Tensor::zeros({g.m, g.n}, c.c_dtype, dtrn::Device::cuda(0));
    const double dispatch = median_ms([&] { backend.gemm(g, a, b, out); });
    const double cublaslt = median_ms([&] {
      dtrn::cuda::cublaslt_gemm(g, DType::kBF16, c.c_dtype, a.raw_data(), b.raw_data(), out.raw_data(), 0);
    });
    const double bytes = static_cast<double>(a.nbytes() + b.nbytes() + out.nbytes() * (g.beta != 0 ? 2 : 1));
    std::printf("%-30s %8ld %8ld %8ld %12.4f %12.4f %8.2f %12.1f\n", c.name.c_str(), static_cast<long>(g.m),
                static_cast<long>(g.n), static_cast<long>(g.k), dispatch, cublaslt, cublaslt / dispatch,
                bytes / (dispatch * 1e-3) / 1e9);
  }
}

int run() {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("gemm_bench on %s (%d SMs), median of %d runs\n", prop.name, prop.multiProcessorCount,
              kRuns);
  constexpr int64_t kTokens = 8 * 2048, kModel = 960, kQkv = 960 + 2 * 5 * 64, kFfn = 2560,
                    kVocab = 49152;
  const std::vector<Case> cases = {
      {"square 4096^3 bf16", 4096, 4096, 4096, false, false, DType::kBF16},
      {"square 4096^3 f32 (no TF32)", 4096, 4096, 4096, false, false, DType::kF32},
      {"360M qkv proj   x W^T", kTokens, kQkv, kModel, false, true, DType::kBF16},
      {"360M attn out   x W^T", kTokens, kModel, kModel, false, true, DType::kBF16},
      {"360M gate/up    x W^T", kTokens, kFfn, kModel, false, true, DType::kBF16},
      {"360M down       x W^T", kTokens, kModel, kFfn, false, true, DType::kBF16},
      {"360M lm head    x W^T", kTokens, kVocab, kModel, false, true, DType::kBF16},
      {"360M lm head dX = dY W", kTokens, kModel, kVocab, false, false, DType::kBF16},
      {"360M lm head dW = dY^T X", kVocab, kModel, kTokens, true, false, DType::kBF16},
  };
  std::printf("%-30s %8s %8s %8s %10s %10s\n", "product", "M", "N", "K", "ms", "TFLOP/s");
  for (const Case& c : cases) {
    const double ms = time_case(c);
    const double tflops = 2.0 * c.m * c.n * c.k / (ms * 1e-3) / 1e12;
    std::printf("%-30s %8ld %8ld %8ld %10.3f %10.1f\n", c.name.c_str(), static_cast<long>(c.m),
                static_cast<long>(c.n), static_cast<long>(c.k), ms, tflops);
  }
  run_router();
  const dtrn::cuda::AllocatorStats s = dtrn::cuda::caching_allocator().stats(0);
  std::printf("allocator: peak %.1f MiB in use, %.1f MiB cached, %lu cudaMalloc calls, %lu of %lu "
              "allocations from the cache\n",
              s.peak_allocated_bytes / 1048576.0, s.cached_bytes / 1048576.0,
              static_cast<unsigned long>(s.device_mallocs), static_cast<unsigned long>(s.cache_hits),
              static_cast<unsigned long>(s.allocations));
  return 0;
}
#endif

}  // namespace

int main() {
#ifdef DTRN_WITH_CUDA
  return dtrn::bench::gpu_bench_main("gemm_bench", [&] { return run(); });
#else
  return dtrn::bench::gpu_bench_main("gemm_bench", [] { return 0; });
#endif
}
