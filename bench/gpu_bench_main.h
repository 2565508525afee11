// main() of the GPU benchmarks (attention_bench, gemm_bench, memory_bench): without a GPU, or without
// the CUDA backend, it says why there is nothing to measure and exits 0; else it returns run()'s status,
// and a dtrn::Error from it becomes one line on stderr and status 1.
#pragma once

#include <cstdio>

#include "dtrn/runtime/device.h"
#include "dtrn/runtime/check.h"

namespace dtrn::bench {

template <typename Run>
int gpu_bench_main(const char* name, Run&& run) {
  if (!cuda_available()) {
    std::printf("%s: no GPU (CUDA backend %s); nothing to measure\n", name,
                cuda_compiled() ? "built" : "not built");
    return 0;
  }
  try {
    return run();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace dtrn::bench
