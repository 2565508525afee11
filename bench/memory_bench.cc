// memory_bench: the memory-bound kernels of a training step against the GPU's bandwidth. Times the
// optimizer (the gradient norm and AdamW over the 360m preset's parameters: f32 masters, moments
// and gradients, bf16 compute copies) and RMSNorm at the 360m step's activations ([16384, 960]: 8 x
// 2048 or 2 x 8192 tokens of d 960) in bf16 and f32: forward, the forward fused with the residual
// add, the backward and the backward that adds the kept residual gradient (rmsnorm_keep's dh);
// cross-entropy over the padded vocabulary, unfused and fused; RoPE over the step's queries and keys;
// and SwiGLU over its MLP activations. A device-to-device copy gives the bandwidth this GPU reaches at
// all.
//
// The backend's kernels are called directly (white-box: no autograd bookkeeping is timed), median
// of 20 runs after 3 warm-ups (cuda_timing.h). GB/s counts the bytes each kernel must move at
// least, the row-sized arrays only (per-row statistics, the norm weight and dw's per-block partial
// sums, under 4% of a norm backward's traffic, and the optimizer's tables are left out):
//   AdamW           grad, m, v, param f32 read (16 B); m, v, param f32, bf16 copy written (14 B)
//   gradient norm   grad f32 read (4 B)
//   rmsnorm         x read, y written                 (2 rows of N x C elements)
//   add_rmsnorm     x, delta read, h, y written       (4)
//   rmsnorm bwd     dy, x read, dx written            (3)
//   ... with dh     dy, x, dh read, dx written        (4)
//   rope            x read, out written               (2)
//   swiglu          gate, up read, h written          (3 rows of N x F)
//   swiglu bwd      gate, up, dh read, dgate, dup and the recomputed h written (6)
//   cross-entropy   forward + backward: logits read twice, dlogits written (3 rows of N x V);
//                   fused: logits read, dlogits written (2)
// Exits 0 with a message where no GPU or no CUDA backend exists.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../runtime/src/backend.h"
#include "dtrn/runtime/tensor.h"
#include "gpu_bench_main.h"

#ifdef DTRN_WITH_CUDA
#include "cuda_timing.h"
#endif

namespace {

#ifdef DTRN_WITH_CUDA
using dtrn::DType;
using dtrn::Shape;
using dtrn::Tensor;
using dtrn::bench::median_ms;

const dtrn::Device kGpu = dtrn::Device::cuda(0);

void report(const std::string& what, double ms, double bytes) {
  std::printf("%-44s | %8.3f | %10.1f | %7.1f\n", what.c_str(), ms, bytes / 1e6,
              bytes / (ms * 1e-3) / 1e9);
}

// The 360m preset's parameter shapes (deploy/configs/360m.yaml, ../shared/dtrnet-spec.md): the tied
// embedding of the padded vocabulary, 32 layers of attention (15 query heads, 5 KV heads of 64),
// SwiGLU 2560 and two norms, a router (d -> d/2 -> 2, with biases) in the 16 D layers of the
// bilayer layout, and the final norm.
std::vector<Shape> shapes_360m() {
  constexpr int64_t d = 960, kv = 320, ff = 2560, vocab = 50304, layers = 32;
  std::vector<Shape> shapes = {{vocab, d}};
  for (int64_t l = 0; l < layers; ++l) {
    for (const Shape& s : {Shape{d}, Shape{d, d}, Shape{kv, d}, Shape{kv, d}, Shape{d, d}, Shape{d},
                           Shape{ff, d}, Shape{ff, d}, Shape{d, ff}}) {
      shapes.push_back(s);
    }
    if (l % 2 == 1) {
      for (const Shape& s : {Shape{d / 2, d}, Shape{d / 2}, Shape{2, d / 2}, Shape{2}})
        shapes.push_back(s);
    }
  }
  shapes.push_back({d});
  return shapes;
}

void bench_optimizer() {
  std::vector<dtrn::AdamWTensors> entries;
  std::vector<Tensor> grads;
  int64_t total = 0;
  uint64_t seed = 1;
  for (const Shape& shape : shapes_360m()) {
    dtrn::AdamWTensors e;
    e.param = Tensor::uniform(shape, -0.05, 0.05, seed, 1, 0, DType::kF32, kGpu);
    e.grad = Tensor::uniform(shape, -1e-3, 1e-3, seed, 2, 0, DType::kF32, kGpu);
    e.m = Tensor::zeros(shape, DType::kF32, kGpu);
    e.v = Tensor::zeros(shape, DType::kF32, kGpu);
    e.compute = Tensor::empty(shape, DType::kBF16, kGpu);
    e.weight_decay = shape.size() == 2 ? 0.01 : 0.0;
    total += e.param.numel();
    grads.push_back(e.grad);
    entries.push_back(e);
    ++seed;
  }
  dtrn::Backend& backend = dtrn::backend_for(kGpu);
  const Tensor norm_sq = Tensor::zeros({1}, DType::kF64, kGpu);
  const double n = static_cast<double>(total);
  const std::string count =
      std::to_string(entries.size()) + " tensors, " + std::to_string(total) + " elements";
  report("gradient norm (" + count + ")",
         median_ms([&] { backend.sum_squares_multi(grads, norm_sq); }), 4 * n);
  // The reference recipe's betas, clipping at 1.0 (active: these gradients' norm is ~11), at step 10
  // and at step 1000, where both bias corrections are exactly 1 and the kernel skips their divisions.
  for (int step : {10, 1000}) {
    const dtrn::AdamWArgs args{
        3e-4, 0.9, 0.95, 1e-8, 0.0, 1 - std::pow(0.9, step), 1 - std::pow(0.95, step)};
    report("AdamW, step " + std::to_string(step),
           median_ms([&] { backend.adamw_multi(entries, args, norm_sq, 1.0); }), 30 * n);
  }
}

void bench_norms(int64_t rows, int64_t cols, DType dtype) {
  const auto draw = [&](const Shape& shape, uint64_t stream, double lo, double hi) {
    return Tensor::uniform(shape, lo, hi, 7, stream, 0, dtype, kGpu);
  };
  const Tensor x = draw({rows, cols}, 1, -1, 1), delta = draw({rows, cols}, 2, -1, 1);
  const Tensor dy = draw({rows, cols}, 3, -1, 1), dh = draw({rows, cols}, 4, -1, 1);
  const Tensor w = draw({cols}, 5, 0.5, 1.5);
  const auto like = [&](const Tensor& t) { return Tensor::empty(t.shape(), dtype, kGpu); };
  const Tensor y = like(x), h = like(x), dx = like(x), dw = like(w);
  const Tensor rstd = Tensor::empty({rows}, dtype == DType::kF64 ? DType::kF64 : DType::kF32, kGpu);
  dtrn::Backend& backend = dtrn::backend_for(kGpu);
  const double row_bytes = static_cast<double>(rows * cols * dtrn::dtype_size(dtype));
  const std::string shape = " [" + std::to_string(rows) + ", " + std::to_string(cols) + "] " +
                            std::string(dtrn::dtype_name(dtype));
  report("rmsnorm" + shape, median_ms([&] { backend.rmsnorm(x, w, 1e-5, y, rstd); }),
         2 * row_bytes);
  report("add_rmsnorm" + shape,
         median_ms([&] { backend.add_rmsnorm(x, delta, w, 1e-5, h, y, rstd); }), 4 * row_bytes);
  report("rmsnorm backward" + shape,
         median_ms([&] { backend.rmsnorm_backward(x, w, rstd, dy, dx, dw); }), 3 * row_bytes);
  report("rmsnorm backward + dh" + shape,
         median_ms([&] { backend.add_rmsnorm_backward(x, w, rstd, dy, dh, dx, dw); }),
         4 * row_bytes);
}

// Cross-entropy over the 360m preset's padded vocabulary at its step's 16384 tokens, bf16 logits: the
// forward then the backward (two kernels: the logits read twice, the gradient written) against the
// fused kernel the op runs when the logits need a gradient (read once, written once).
void bench_cross_entropy(int64_t rows, int64_t vocab, int64_t classes) {
  const Tensor logits = Tensor::uniform({rows, vocab}, -4, 4, 9, 1, 0, DType::kBF16, kGpu);
  std::vector<int64_t> t(rows);
  for (int64_t r = 0; r < rows; ++r) t[r] = (r * 7919) % classes;
  const Tensor targets = Tensor::from_ints(t, {rows}, DType::kI32).to(kGpu);
  const Tensor losses = Tensor::empty({rows}, DType::kF32, kGpu), lse = Tensor::empty({rows}, DType::kF32, kGpu);
  const Tensor dlogits = Tensor::empty({rows, vocab}, DType::kBF16, kGpu);
  const Tensor upstream = Tensor::full({}, 1.0, DType::kF32, kGpu);
  dtrn::Backend& backend = dtrn::backend_for(kGpu);
  const double bytes = static_cast<double>(rows * vocab * 2);
  const std::string shape = " [" + std::to_string(rows) + ", " + std::to_string(vocab) + "] bf16";
  const double scale = 1.0 / static_cast<double>(rows);
  report("cross_entropy forward + backward" + shape, median_ms([&] {
           backend.cross_entropy(logits, targets, -100, classes, losses, lse);
           backend.cross_entropy_backward(logits, targets, -100, classes, lse, upstream, scale, dlogits);
         }),
         3 * bytes);
  report("cross_entropy fused" + shape, median_ms([&] {
           backend.cross_entropy_fused(logits, targets, -100, classes, scale, losses, lse, dlogits);
         }),
         2 * bytes);
}

// RoPE over the 360m step's queries ([16384, 15, 64]) and keys ([16384, 5, 64]), bf16: x read, out
// written.
void bench_rope(int64_t rows, int64_t heads, int64_t dim) {
  const Tensor x = Tensor::uniform({rows, heads, dim}, -1, 1, 11, 1, 0, DType::kBF16, kGpu);
  const Tensor out = Tensor::empty(x.shape(), DType::kBF16, kGpu);
  std::vector<int64_t> pos(rows);
  for (int64_t r = 0; r < rows; ++r) pos[r] = r % 8192;
  const Tensor positions = Tensor::from_ints(pos, {rows}, DType::kI32).to(kGpu);
  dtrn::Backend& backend = dtrn::backend_for(kGpu);
  report("rope [" + std::to_string(rows) + ", " + std::to_string(heads) + ", " + std::to_string(dim) + "] bf16",
         median_ms([&] { backend.rope(x, positions, 10000.0, false, out); }),
         2.0 * static_cast<double>(x.numel() * 2));
}

// SwiGLU over the 360m step's MLP activations ([16384, 2560] bf16): the forward, and the backward that
// also writes the activation (activation_linear.cc's one pass).
void bench_swiglu(int64_t rows, int64_t cols) {
  const Shape shape{rows, cols};
  const Tensor gate = Tensor::uniform(shape, -4, 4, 12, 1, 0, DType::kBF16, kGpu);
  const Tensor up = Tensor::uniform(shape, -1, 1, 13, 1, 0, DType::kBF16, kGpu);
  const Tensor grad = Tensor::uniform(shape, -1, 1, 14, 1, 0, DType::kBF16, kGpu);
  const Tensor h = Tensor::empty(shape, DType::kBF16, kGpu), dgate = Tensor::empty(shape, DType::kBF16, kGpu),
               dup = Tensor::empty(shape, DType::kBF16, kGpu);
  dtrn::Backend& backend = dtrn::backend_for(kGpu);
  const double bytes = static_cast<double>(gate.numel() * 2);
  const std::string what = " [" + std::to_string(rows) + ", " + std::to_string(cols) + "] bf16";
  report("swiglu" + what, median_ms([&] { backend.swiglu(gate, up, h); }), 3 * bytes);
  report("swiglu backward + h" + what, median_ms([&] { backend.swiglu_backward(gate, up, grad, dgate, dup, h); }),
         6 * bytes);
}

void bench_copy() {
  constexpr int64_t kElements = int64_t{1} << 28;  // 1 GiB of f32
  const Tensor src = Tensor::zeros({kElements}, DType::kF32, kGpu),
               dst = Tensor::empty({kElements}, DType::kF32, kGpu);
  const double ms = median_ms([&] {
    CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), kElements * 4,
                               cudaMemcpyDeviceToDevice, dtrn::cuda::stream_for(0)));
  });
  report("device-to-device copy, 1 GiB", ms, 2.0 * kElements * 4);
}

int run() {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("memory_bench on %s (%d SMs), median of %d runs\n", prop.name,
              prop.multiProcessorCount, dtrn::bench::kRuns);
  std::printf("%-44s | %8s | %10s | %7s\n", "kernel", "ms", "MB moved", "GB/s");
  bench_copy();
  bench_optimizer();
  for (DType dtype : {DType::kBF16, DType::kF32}) bench_norms(16384, 960, dtype);
  bench_cross_entropy(16384, 50304, 50257);
  bench_rope(16384, 15, 64);
  bench_rope(16384, 5, 64);
  bench_swiglu(16384, 2560);
  return 0;
}
#endif

}  // namespace

int main() {
#ifdef DTRN_WITH_CUDA
  return dtrn::bench::gpu_bench_main("memory_bench", [&] { return run(); });
#else
  return dtrn::bench::gpu_bench_main("memory_bench", [] { return 0; });
#endif
}
