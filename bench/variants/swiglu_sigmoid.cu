// SwiGLU's sigmoid in its accurate form (expf and an IEEE division, activation.cu's) against the
// hardware's approximations (__expf with __fdividef or __frcp_rn), in a copy of the backward that also
// writes the activation and of the forward, at the 360m step's [16384, 2560] bf16, beside a device copy.
// All run at the same rate: the kernel is at its bytes, so the accurate form stays (bench/RESULTS.md).
// Standalone (no dtrn code): STAGES="variants" bash bench/gpu_suite.sh, or
//   nvcc -O3 -arch=sm_90 -std=c++17 bench/variants/swiglu_sigmoid.cu -o /tmp/swiglu_sigmoid && /tmp/swiglu_sigmoid
#include <cstdint>
#include <cstdio>

struct alignas(16) C8 {
  uint16_t v[8];
};
__device__ __forceinline__ float b2f(uint16_t b) { return __uint_as_float(uint32_t(b) << 16); }
__device__ __forceinline__ uint16_t f2b(float f) {
  uint16_t r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}
template <int V>
__device__ __forceinline__ float sig(float x) {
  if (V == 0) return 1.0f / (1.0f + expf(-x));
  if (V == 1) return __fdividef(1.0f, 1.0f + __expf(-x));
  return __frcp_rn(1.0f + __expf(-x));
}
template <int V>
__global__ void bwd(const C8* g, const C8* u, const C8* d, C8* dg, C8* du, C8* h, int64_t chunks) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks; c += int64_t(gridDim.x) * blockDim.x) {
    const C8 a = g[c], b = u[c], e = d[c];
    C8 o0, o1, o2;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float gg = b2f(a.v[k]), uu = b2f(b.v[k]), dd = b2f(e.v[k]), s = sig<V>(gg);
      o1.v[k] = f2b(dd * gg * s);
      o0.v[k] = f2b(dd * uu * s * (1.0f + gg * (1.0f - s)));
      o2.v[k] = f2b(gg * s * uu);
    }
    dg[c] = o0;
    du[c] = o1;
    h[c] = o2;
  }
}
template <int V>
__global__ void fwd(const C8* g, const C8* u, C8* h, int64_t chunks) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks; c += int64_t(gridDim.x) * blockDim.x) {
    const C8 a = g[c], b = u[c];
    C8 o;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float gg = b2f(a.v[k]);
      o.v[k] = f2b(gg * sig<V>(gg) * b2f(b.v[k]));
    }
    h[c] = o;
  }
}
int main() {
  const int64_t n = 16384LL * 2560, chunks = n / 8;
  C8 *g, *u, *d, *a, *b, *c;
  for (C8** p : {&g, &u, &d, &a, &b, &c}) cudaMalloc(p, n * 2);
  cudaMemset(g, 0x3f, n * 2);
  cudaMemset(u, 0x3e, n * 2);
  cudaMemset(d, 0xbd, n * 2);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const unsigned blocks = (unsigned)((chunks + 255) / 256 < 8192 ? (chunks + 255) / 256 : 8192);
  auto time = [&](const char* name, auto f, double bytes) {
    for (int w = 0; w < 3; ++w) f();
    float best = 1e9;
    for (int r = 0; r < 20; ++r) {
      cudaEventRecord(e0);
      f();
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms;
      cudaEventElapsedTime(&ms, e0, e1);
      best = ms < best ? ms : best;
    }
    printf("%-22s %.4f ms %.0f GB/s %s\n", name, best, bytes / (best * 1e-3) / 1e9,
           cudaGetErrorString(cudaGetLastError()));
  };
  time("bwd accurate", [&] { bwd<0><<<blocks, 256>>>(g, u, d, a, b, c, chunks); }, 6.0 * n * 2);
  time("bwd fast", [&] { bwd<1><<<blocks, 256>>>(g, u, d, a, b, c, chunks); }, 6.0 * n * 2);
  time("bwd exp fast, rcp.rn", [&] { bwd<2><<<blocks, 256>>>(g, u, d, a, b, c, chunks); }, 6.0 * n * 2);
  time("fwd accurate", [&] { fwd<0><<<blocks, 256>>>(g, u, c, chunks); }, 3.0 * n * 2);
  time("fwd fast", [&] { fwd<1><<<blocks, 256>>>(g, u, c, chunks); }, 3.0 * n * 2);
  time("copy", [&] { cudaMemcpyAsync(a, g, n * 2, cudaMemcpyDeviceToDevice); }, 2.0 * n * 2);
}
