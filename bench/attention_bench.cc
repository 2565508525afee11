// attention_bench: the throughput of dtrn's CUDA attention kernels (cuda/attention.h) on causal bf16
// batches of the SmolLM-360M shape (15 query heads of 64 sharing 5 KV heads) and an MHA shape with
// D = 128 (16 heads), at B x T = 8 x 2048 and 2 x 8192 packed rows, each with the split and the fused
// tensor-core backward (DTRN_ATTENTION_BACKWARD) and, where the GPU runs them, the Hopper wgmma
// kernels (DTRN_ATTENTION_KERNEL=wgmma, kernel column "wgmma": the wgmma forward with the split
// mma.sync backward, then with the wgmma backward, backward column "wgmma"); the bf16 generic kernels
// and the f32 kernels at the first shape for comparison. bench/peer_attention.py times torch at the
// same shapes.
//
// The backend's kernels are called directly (white-box, so no autograd bookkeeping is timed), with CUDA
// events on dtrn's stream around each call: median of 20 runs after 3 warm-ups (cuda_timing.h).
// FLOPs count the matrix products over the unmasked (causal) half only, the FlashAttention convention:
//   forward  = 2 products (Q K^T, P V) x 2 T^2 D / 2 per sequence and head = 4 N T H D / 2 (N = B T),
//   backward = 2.5 x forward (5 products: S recomputed, dP, dV, dK, dQ; dtrn's split dk/dv and dq
//              kernels, on mma.sync or wgmma, each recompute S and dP, so they execute 7, the same
//              3.5 x forward any atomics-free FlashAttention-2 backward does; the fused backward
//              executes the 5).
// Exits 0 with a message where no GPU or no CUDA backend exists.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../runtime/src/backend.h"
#include "dtrn/runtime/tensor.h"
#include "gpu_bench_main.h"

#ifdef DTRN_WITH_CUDA
#include <cuda_runtime_api.h>

#include "../runtime/src/cuda/cuda_check.h"
#include "../runtime/src/cuda/wgmma_support.h"
#include "cuda_timing.h"  // median_ms: CUDA events on dtrn's stream, so they bracket exactly the kernels
#endif

namespace {

struct Dims {
  int64_t b, t, h, g, d;
};

// The one shape `B T H G D` of the command line: positive integers, H a multiple of G; false where
// they are not.
bool parse_shape(char** argv, Dims& out) {
  int64_t v[5];
  for (int i = 0; i < 5; ++i) {
    char* end = nullptr;
    v[i] = std::strtoll(argv[i + 1], &end, 10);
    if (end == argv[i + 1] || *end != '\0' || v[i] <= 0) return false;
  }
  out = {v[0], v[1], v[2], v[3], v[4]};
  return out.h % out.g == 0;
}

#ifdef DTRN_WITH_CUDA
using dtrn::DType;
using dtrn::Tensor;

using dtrn::bench::kRuns;
using dtrn::bench::median_ms;

struct Case {
  int64_t b, t, h, g, d;
  DType dtype;
  const char* kernel;    // DTRN_ATTENTION_KERNEL
  const char* backward;  // DTRN_ATTENTION_BACKWARD
};

void run_case(const Case& c) {
  setenv("DTRN_ATTENTION_KERNEL", c.kernel, 1);
  setenv("DTRN_ATTENTION_BACKWARD", c.backward, 1);
  const dtrn::Device gpu = dtrn::Device::cuda(0);
  const int64_t n = c.b * c.t;
  const auto draw = [&](const dtrn::Shape& shape, uint64_t stream) {
    return Tensor::uniform(shape, -1, 1, 1, stream, 0, c.dtype, gpu);
  };
  const Tensor q = draw({n, c.h, c.d}, 1), k = draw({n, c.g, c.d}, 2), v = draw({n, c.g, c.d}, 3);
  const Tensor dout = draw({n, c.h, c.d}, 4);
  std::vector<int64_t> offsets(c.b + 1);
  for (int64_t i = 0; i <= c.b; ++i) offsets[i] = i * c.t;
  const Tensor cu = Tensor::from_ints(offsets, {c.b + 1}, DType::kI32, gpu);
  const DType stats = c.dtype == DType::kF64 ? DType::kF64 : DType::kF32;
  const Tensor out = Tensor::empty(q.shape(), c.dtype, gpu), lse = Tensor::empty({c.h, n}, stats, gpu);
  const Tensor dq = Tensor::empty(q.shape(), c.dtype, gpu), dk = Tensor::empty(k.shape(), c.dtype, gpu),
               dv = Tensor::empty(v.shape(), c.dtype, gpu);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  dtrn::Backend& backend = dtrn::backend_for(gpu);
  const auto forward = [&] { backend.attention(q, k, v, cu, scale, out, lse); };
  const auto backward = [&] {
    backend.attention_backward(q, k, v, cu, scale, out, lse, dout, dq, dk, dv);
  };
  const double fwd = median_ms(forward);
  const double bwd = median_ms(backward);
  const double both = median_ms([&] {
    forward();
    backward();
  });
  const double fwd_flop = 4.0 * n * c.t * c.h * c.d / 2;
  const auto tflops = [](double flop, double ms) { return flop / (ms * 1e-3) / 1e12; };
  std::printf(
      "%4s %2ld x %5ld  H %2ld G %2ld D %3ld  %-7s %-5s | %8.3f %6.1f | %8.3f %6.1f | %8.3f %6.1f\n",
      dtrn::dtype_name(c.dtype).data(), static_cast<long>(c.b), static_cast<long>(c.t),
      static_cast<long>(c.h), static_cast<long>(c.g), static_cast<long>(c.d), c.kernel, c.backward,
      fwd, tflops(fwd_flop, fwd), bwd, tflops(2.5 * fwd_flop, bwd), both, tflops(3.5 * fwd_flop, both));
  unsetenv("DTRN_ATTENTION_KERNEL");
  unsetenv("DTRN_ATTENTION_BACKWARD");
}

// With a `shape` (B T H G D on the command line), only that shape, with the kernels training runs
// (auto; the backward DTRN_ATTENTION_BACKWARD's where the environment sets it): the form that Nsight
// Compute and A/B runs time.
int run(const Dims* shape) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("attention_bench on %s (%d SMs), causal, median of %d runs; TFLOP/s over the causal half "
              "(fwd 4NTHD/2, bwd 2.5x, fwd+bwd 3.5x)\n",
              prop.name, prop.multiProcessorCount, kRuns);
  std::printf("%-51s | %15s | %15s | %15s\n", "case", "fwd ms  TFLOP/s", "bwd ms  TFLOP/s",
              "f+b ms  TFLOP/s");
  const std::string no_wgmma = dtrn::cuda::wgmma_unavailable_reason(0);
  if (!no_wgmma.empty()) std::printf("no wgmma rows: %s\n", no_wgmma.c_str());
  std::vector<Case> cases;
  if (shape != nullptr) {
    const char* backward = std::getenv("DTRN_ATTENTION_BACKWARD");
    cases.push_back({shape->b, shape->t, shape->h, shape->g, shape->d, DType::kBF16, "auto",
                     backward != nullptr && *backward != '\0' ? backward : "auto"});
  }
  const std::vector<Dims> shapes = shape != nullptr ? std::vector<Dims>{}
                                             : std::vector<Dims>{{8, 2048, 15, 5, 64}, {2, 8192, 15, 5, 64},
                                                                 {8, 2048, 16, 16, 128}, {2, 8192, 16, 16, 128}};
  for (const Dims& s : shapes) {
    for (const char* backward : {"split", "fused"}) {
      cases.push_back({s.b, s.t, s.h, s.g, s.d, DType::kBF16, "mma", backward});
    }
    if (no_wgmma.empty()) {
      for (const char* backward : {"split", "wgmma", "wgmma-fused"}) {
        cases.push_back({s.b, s.t, s.h, s.g, s.d, DType::kBF16, "wgmma", backward});
      }
    }
    cases.push_back({s.b, s.t, s.h, s.g, s.d, DType::kBF16, "auto", "auto"});  // what training runs
  }
  if (shape == nullptr) {
    cases.push_back({8, 2048, 15, 5, 64, DType::kBF16, "generic", "split"});
    cases.push_back({8, 2048, 15, 5, 64, DType::kF32, "auto", "split"});
  }
  for (const Case& c : cases) run_case(c);
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  Dims shape{};
  if (argc != 1 && (argc != 6 || !parse_shape(argv, shape))) {
    std::fprintf(stderr,
                 "attention_bench: expected no arguments (every case) or B T H G D, positive integers "
                 "with H a multiple of G\n");
    return 2;
  }
#ifdef DTRN_WITH_CUDA
  return dtrn::bench::gpu_bench_main("attention_bench",
                                     [&] { return run(argc == 6 ? &shape : nullptr); });
#else
  return dtrn::bench::gpu_bench_main("attention_bench", [] { return 0; });
#endif
}
