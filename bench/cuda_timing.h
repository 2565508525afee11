// The GPU benchmarks' timer: the median of kRuns timings of fn() after kWarmup untimed ones, each
// bracketed by CUDA events on dtrn's stream of GPU 0 (the stream the backend queues every kernel
// on, so the events enclose exactly the work fn() queues). Include only in code built with
// DTRN_WITH_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "../runtime/src/cuda/cuda_check.h"
#include "../runtime/src/cuda/cuda_context.h"

namespace dtrn::bench {

constexpr int kWarmup = 3, kRuns = 20;

template <typename Fn>
double median_ms(Fn&& fn) {
  cudaStream_t stream = cuda::stream_for(0);
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < kWarmup + kRuns; ++i) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float elapsed = 0;
    CUDA_CHECK(cudaEventElapsedTime(&elapsed, start, stop));
    if (i >= kWarmup) ms.push_back(elapsed);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace dtrn::bench
