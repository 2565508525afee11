// What bounds RoPE (Note [RoPE's table] in runtime/src/cuda/rope.cu): the 360m step's queries and keys
// ([16384, 15 or 5, 64] bf16, positions row % 8192) rotated by copies of the kernel with the angles formed
// per (row, frequency) in double (orig), without pow (nopow), with no transcendental at all (nomath), and
// read from a (cos, sin) table in double (table, table2: a thread per (row, head, pair of frequencies)),
// beside a device copy of the same bytes. The table kernels' outputs are compared with orig's bit for bit.
// Standalone (no dtrn code): STAGES="variants" bash bench/gpu_suite.sh, or
//   nvcc -O3 -arch=sm_90 -std=c++17 bench/variants/rope_angles.cu -o /tmp/rope_angles && /tmp/rope_angles
#include <cuda_bf16.h>

#include <cstdio>
#include <vector>

typedef __nv_bfloat16 bf;
__device__ __forceinline__ bf f2b(double v) { return __float2bfloat16_rn((float)v); }

// The pair (i, i + half) of every head of `row`, rotated by the angle with cosine cs and sine sn: the
// original kernel's loop, a head's round trip at a time.
__device__ __forceinline__ void rotate_heads(const bf* x, int64_t row, int64_t i, int64_t half, int64_t heads,
                                             int64_t dim, double cs, double sn, bf* out) {
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t base = (row * heads + h) * dim;
    const double x1 = __bfloat162float(x[base + i]), x2 = __bfloat162float(x[base + i + half]);
    out[base + i] = f2b(x1 * cs - x2 * sn);
    out[base + i + half] = f2b(x2 * cs + x1 * sn);
  }
}

__global__ void orig(const bf* x, const int* pos, double theta, int64_t n, int64_t heads, int64_t dim, bf* out) {
  const int64_t half = dim / 2, total = n * half;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % half, row = t / half;
    const double freq = pow(theta, -2.0 * (double)i / (double)dim);
    const double angle = (double)pos[row] * freq;
    double sn, cs;
    sincos(angle, &sn, &cs);
    rotate_heads(x, row, i, half, heads, dim, cs, sn, out);
  }
}

__global__ void nomath(const bf* x, const int* pos, double, int64_t n, int64_t heads, int64_t dim, bf* out) {
  const int64_t half = dim / 2, total = n * half;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % half, row = t / half;
    const double cs = 1.0 - (double)pos[row] * 1e-9 * i, sn = (double)pos[row] * 1e-9;
    rotate_heads(x, row, i, half, heads, dim, cs, sn, out);
  }
}

__global__ void nopow(const bf* x, const int* pos, double, int64_t n, int64_t heads, int64_t dim, bf* out) {
  const int64_t half = dim / 2, total = n * half;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % half, row = t / half;
    const double angle = (double)pos[row] * (1.0 / (1 + i));
    double sn, cs;
    sincos(angle, &sn, &cs);
    rotate_heads(x, row, i, half, heads, dim, cs, sn, out);
  }
}

__global__ void table(const bf* __restrict__ x, const int* __restrict__ pos, const double2* __restrict__ tab,
                      int64_t n, int heads, int dim, bf* __restrict__ out) {
  const int half = dim / 2;
  const int64_t total = n * half;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int i = t % half;
    const int64_t row = t / half;
    const double2 c = tab[(int64_t)pos[row] * half + i];
    const bf* xr = x + row * heads * dim + i;
    bf* o = out + row * heads * dim + i;
    for (int h = 0; h < heads; ++h) {
      const double x1 = __bfloat162float(xr[h * dim]), x2 = __bfloat162float(xr[h * dim + half]);
      o[h * dim] = f2b(x1 * c.x - x2 * c.y);
      o[h * dim + half] = f2b(x2 * c.x + x1 * c.y);
    }
  }
}

__global__ void table2(const bf* __restrict__ x, const int* __restrict__ pos, const double2* __restrict__ tab,
                       int64_t n, int heads, int dim, bf* __restrict__ out) {
  const int half = dim / 2, pairs = half / 2;
  const int64_t total = n * heads * pairs;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int j = t % pairs;
    const int64_t rh = t / pairs, row = rh / heads;
    const int i = 2 * j;
    const double2 c0 = tab[(int64_t)pos[row] * half + i], c1 = tab[(int64_t)pos[row] * half + i + 1];
    const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162*>(x + rh * dim + i);
    const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(x + rh * dim + i + half);
    const double a0 = __low2float(a), a1 = __high2float(a), b0 = __low2float(b), b1 = __high2float(b);
    __nv_bfloat162 oa, ob;
    oa.x = f2b(a0 * c0.x - b0 * c0.y);
    oa.y = f2b(a1 * c1.x - b1 * c1.y);
    ob.x = f2b(b0 * c0.x + a0 * c0.y);
    ob.y = f2b(b1 * c1.x + a1 * c1.y);
    *reinterpret_cast<__nv_bfloat162*>(out + rh * dim + i) = oa;
    *reinterpret_cast<__nv_bfloat162*>(out + rh * dim + i + half) = ob;
  }
}

__global__ void build_table(double theta, int positions, int dim, double2* tab) {
  const int half = dim / 2;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < positions * half; t += gridDim.x * blockDim.x) {
    const int i = t % half, p = t / half;
    const double freq = pow(theta, -2.0 * (double)i / (double)dim);
    double sn, cs;
    sincos((double)p * freq, &sn, &cs);
    tab[t] = make_double2(cs, sn);
  }
}

int main() {
  const int64_t n = 16384;
  const int dim = 64;
  for (int heads : {15, 5}) {
    bf *x, *o, *o2;
    int* pos;
    double2* tab;
    cudaMalloc(&x, n * heads * dim * 2);
    cudaMalloc(&o, n * heads * dim * 2);
    cudaMalloc(&o2, n * heads * dim * 2);
    cudaMemset(x, 0x3f, n * heads * dim * 2);
    std::vector<int> hp(n);
    for (int i = 0; i < n; ++i) hp[i] = i % 8192;
    cudaMalloc(&pos, n * 4);
    cudaMemcpy(pos, hp.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMalloc(&tab, 8192 * 32 * 16);
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    auto blocks = [](int64_t m) { int64_t bl = (m + 255) / 256; return (unsigned)(bl < 8192 ? bl : 8192); };
    auto time = [&](const char* name, auto launch) {
      for (int w = 0; w < 3; ++w) launch();
      float best = 1e9;
      for (int r = 0; r < 20; ++r) {
        cudaEventRecord(a);
        launch();
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms;
        cudaEventElapsedTime(&ms, a, b);
        best = ms < best ? ms : best;
      }
      printf("heads %2d %-12s %.4f ms  %s\n", heads, name, best, cudaGetErrorString(cudaGetLastError()));
    };
    auto differ = [&](const char* name) {
      std::vector<unsigned short> h1(n * heads * dim), h2(n * heads * dim);
      cudaMemcpy(h1.data(), o, h1.size() * 2, cudaMemcpyDeviceToHost);
      cudaMemcpy(h2.data(), o2, h2.size() * 2, cudaMemcpyDeviceToHost);
      int64_t diff = 0;
      for (size_t k = 0; k < h1.size(); ++k) diff += h1[k] != h2[k];
      printf("  %s vs orig: %lld of %zu differ\n", name, (long long)diff, h1.size());
    };
    time("orig", [&] { orig<<<blocks(n * 32), 256>>>(x, pos, 10000.0, n, heads, dim, o); });
    time("nomath", [&] { nomath<<<blocks(n * 32), 256>>>(x, pos, 10000.0, n, heads, dim, o2); });
    time("nopow", [&] { nopow<<<blocks(n * 32), 256>>>(x, pos, 10000.0, n, heads, dim, o2); });
    time("build_table", [&] { build_table<<<blocks(8192 * 32), 256>>>(10000.0, 8192, dim, tab); });
    time("table", [&] { table<<<blocks(n * 32), 256>>>(x, pos, tab, n, heads, dim, o2); });
    differ("table");
    time("table2", [&] { table2<<<blocks(n * heads * 16), 256>>>(x, pos, tab, n, heads, dim, o2); });
    differ("table2");
    time("copy", [&] { cudaMemcpyAsync(o2, x, n * heads * dim * 2, cudaMemcpyDeviceToDevice); });
  }
}
