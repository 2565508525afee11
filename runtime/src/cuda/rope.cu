// Rotate-half rotary position embedding (norm.h; formula and conventions in cpu/norm.cc). A thread
// per (row, frequency i < D/2) takes the cosine and sine of the angle positions[row] * theta^(-2i/D),
// then rotates the pair (i, i + D/2) of every head of the row in double, rounding each output once.
//
// Note [RoPE's table]: forming the angle's sine and cosine in double (angles reach ~1e5 radians at
// long contexts, beyond f32's precision) costs a double pow and sincos per (row, frequency), which
// bounded the kernel (bench/variants/rope_angles.cu: 0.039 ms for a 360m step's queries at 2 x 8192,
// where the same kernel without them takes 0.028 ms). So the backend keeps, per device, theta and D, a table of (cos, sin) for the
// positions 0 .. P-1 (P the most rows any call has had: the positions of packed sequences are below
// their row count) and the kernel reads it; a position outside the table is formed in place, by the
// same expressions, so every output is what the table-less kernel gives, bit for bit.
#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"
#include "cuda/norm.h"

namespace dtrn::cuda {
namespace {

__device__ __forceinline__ double rope_frequency(double theta, int i, int dim) {
  return pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
}

__global__ void rope_table_kernel(double theta, int64_t positions, int dim, double2* table) {
  const int half = dim / 2;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < positions * half;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int i = static_cast<int>(t % half);
    const double angle = static_cast<double>(t / half) * rope_frequency(theta, i, dim);
    double sn, cs;
    sincos(angle, &sn, &cs);
    table[t] = make_double2(cs, sn);
  }
}

template <typename T, typename Position>
__global__ void rope_kernel(const T* __restrict__ x, const Position* __restrict__ positions,
                            const double2* __restrict__ table, int64_t table_rows, double theta,
                            double sign, int64_t n, int heads, int dim, T* __restrict__ out) {
  const int half = dim / 2;
  const int64_t total = n * half;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int i = static_cast<int>(t % half);
    const int64_t row = t / half, pos = static_cast<int64_t>(positions[row]);
    double sn, cs;
    if (pos >= 0 && pos < table_rows) {
      const double2 c = table[pos * half + i];
      cs = c.x;
      sn = c.y;
    } else {
      sincos(static_cast<double>(pos) * rope_frequency(theta, i, dim), &sn, &cs);
    }
    sn *= sign;
    const T* xr = x + row * heads * dim + i;
    T* orow = out + row * heads * dim + i;
    for (int h = 0; h < heads; ++h) {
      const double x1 = static_cast<double>(to_compute(xr[h * dim]));
      const double x2 = static_cast<double>(to_compute(xr[h * dim + half]));
      orow[h * dim] = from_double<T>(x1 * cs - x2 * sn);
      orow[h * dim + half] = from_double<T>(x2 * cs + x1 * sn);
    }
  }
}

}  // namespace

void launch_rope_table(double theta, int64_t positions, int64_t dim, void* table, cudaStream_t stream) {
  if (positions * (dim / 2) == 0) return;
  rope_table_kernel<<<elementwise_blocks(positions * (dim / 2)), kElementwiseThreads, 0, stream>>>(
      theta, positions, static_cast<int>(dim), static_cast<double2*>(table));
  CUDA_CHECK_LAUNCH();
}

void launch_rope(ElemType type, const void* x, const void* positions, ElemType position_type,
                 const void* table, int64_t table_rows, double theta, bool inverse, int64_t n,
                 int64_t heads, int64_t dim, void* out, cudaStream_t stream) {
  const int64_t total = n * (dim / 2);
  if (total * heads == 0) return;
  const double sign = inverse ? -1.0 : 1.0;
  const unsigned blocks = elementwise_blocks(total);
  const int h = static_cast<int>(heads), d = static_cast<int>(dim);
  const double2* tab = static_cast<const double2*>(table);
  if (tab == nullptr) table_rows = 0;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* ot = static_cast<T*>(out);
    if (position_type == ElemType::kI32) {
      rope_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(
          xt, static_cast<const int32_t*>(positions), tab, table_rows, theta, sign, n, h, d, ot);
    } else {
      rope_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(
          xt, static_cast<const int64_t*>(positions), tab, table_rows, theta, sign, n, h, d, ot);
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
