// The rate of f32 -> bf16 rounding in its forms (Note [bf16 rounding in one instruction] in
// runtime/src/cuda/device_types.cuh): bit arithmetic (bf16.h's, the kernels' before), the hardware's
// cvt.rn.bf16.f32 with bf16.h's NaN kept by a compare and a select (store_bf16), the instruction alone
// (round_bf16), the paired cvt.rn.bf16x2.f32 with the NaN selects, and the same loop with no rounding.
// Each thread rounds 4096 values in registers; conversions per clock per SM assume 1.9 GHz.
// Standalone (no dtrn code): STAGES="variants" bash bench/gpu_suite.sh, or
//   nvcc -O3 -arch=sm_90 bench/variants/bf16_rounding.cu -o /tmp/bf16_rounding && /tmp/bf16_rounding
#include <cstdint>
#include <cstdio>

__device__ __forceinline__ uint32_t bits_rounding(float value) {
  const uint32_t u = __float_as_uint(value);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) return (u >> 16) | 0x0040u;
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return (u + rounding) >> 16;
}
__device__ __forceinline__ uint32_t cvt_nan_select(float value) {
  uint16_t bits;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(value));
  const uint32_t u = __float_as_uint(value);
  return value != value ? (u >> 16) | 0x40u : bits;
}
__device__ __forceinline__ uint32_t cvt_only(float value) {
  uint16_t bits;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(value));
  return bits;
}
__device__ __forceinline__ uint32_t cvt_pair_nan_select(float a, float b) {
  uint32_t bits;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(bits) : "f"(b), "f"(a));
  const uint32_t ua = __float_as_uint(a), ub = __float_as_uint(b);
  const uint32_t lo = a != a ? (ua >> 16) | 0x40u : (bits & 0xffff);
  const uint32_t hi = b != b ? (ub >> 16) | 0x40u : (bits >> 16);
  return lo | (hi << 16);
}

template <int V>
__global__ void rounds(float x0, uint32_t* out) {
  const float x = x0 + threadIdx.x * 1e-3f;
  uint32_t acc = 0;
  for (int i = 0; i < 4096; i += 2) {
    const float a = x + i * 1e-7f, b = x - i * 1e-7f;
    if (V == 0) acc ^= bits_rounding(a) ^ (bits_rounding(b) << 16);
    if (V == 1) acc ^= cvt_nan_select(a) ^ (cvt_nan_select(b) << 16);
    if (V == 2) acc ^= cvt_only(a) ^ (cvt_only(b) << 16);
    if (V == 3) acc ^= cvt_pair_nan_select(a, b);
    if (V == 4) acc ^= __float_as_uint(a) ^ __float_as_uint(b);
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

int main() {
  uint32_t* out;
  cudaMalloc(&out, 132 * 8 * 256 * 4);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  const char* names[] = {"bit arithmetic", "cvt + NaN select", "cvt only", "cvt bf16x2 + NaN selects",
                         "no rounding"};
  auto run = [&](int v, auto kernel) {
    kernel<<<132 * 8, 256>>>(1.0f, out);
    cudaEventRecord(a);
    for (int r = 0; r < 10; ++r) kernel<<<132 * 8, 256>>>(1.0f, out);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms;
    cudaEventElapsedTime(&ms, a, b);
    const double conversions = 132.0 * 8 * 256 * 4096 * 10;
    printf("%-28s %.3f ms  %.1f conversions/clk/SM at 1.9 GHz\n", names[v], ms,
           conversions / (ms * 1e-3) / 132 / 1.9e9);
  };
  run(0, rounds<0>);
  run(1, rounds<1>);
  run(2, rounds<2>);
  run(3, rounds<3>);
  run(4, rounds<4>);
  uint32_t h;
  cudaMemcpy(&h, out, 4, cudaMemcpyDeviceToHost);
  printf("(checksum %u, %s)\n", h, cudaGetErrorString(cudaGetLastError()));
}
