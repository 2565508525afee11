// The CUDA backend's training kernels against the CPU backend, their executable specification: affine,
// SiLU, SwiGLU, sums, sum of squares, index_select / index_add / embedding, RMSNorm (alone and fused
// with the residual add), RoPE, softmax,
// cross-entropy (unfused and fused) and AdamW. Through the public ops, forward and backward, in f32,
// bf16 and f64, on odd shapes (1, 7, 33, 50304 columns), empty tensors and one-element rows; then the
// kernels called directly with NaN-filled outputs (every element must be written); then determinism
// (two runs bit-identical) for the reductions that could race. Reference policy and the bf16 widening
// of tolerances: gpu_compare.h. Every test skips without a GPU.
//
// Tolerances (f32), derived per kernel:
//  - kExactish: kernels that compute the CPU's double expression from identical inputs (sums, RMSNorm,
//    AdamW, the softmax backward given y) differ from it only by double-level summation order, so
//    their f32 results differ by at most one rounding step: 2 ulp (2 * 2^-23) relative, plus 1e-10
//    absolute for results so close to zero that double noise of the terms (~1e-15) shows. RoPE adds
//    the error of its angles (see its test).
//  - kSigmoid: SiLU / SwiGLU compute in f32 with the device's expf (<= 2 ulp, glibc's < 1 ulp); a few
//    ulp relative, and where 1 + x (1 - s) cancels, ~1 ulp of the terms (|x| <= 4): 4e-6 absolute.
//  - softmax / cross-entropy: per element, relative to the probability (see those tests).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "../../runtime/src/backend.h"
#include "dtrn/runtime/optim.h"
#include "gpu_compare.h"

namespace dtrn {
namespace {

using gpu_testing::bits_of;
using gpu_testing::expect_close;
using gpu_testing::expect_op_matches;
using gpu_testing::expect_within;
using gpu_testing::kBf16Rounding;
using gpu_testing::kF32Ulp;
using gpu_testing::kGpu;
using gpu_testing::random_cpu;
using gpu_testing::Tol;
using gpu_testing::TensorFn;
using gpu_testing::widen_for;

using gpu_testing::kExactish;
using gpu_testing::kF64;
constexpr Tol kSigmoid{4e-6, 2e-6};

const DType kFloatTypes[] = {DType::kF32, DType::kBF16, DType::kF64};

Tol for_dtype(DType dtype, Tol f32) { return dtype == DType::kF64 ? kF64 : f32; }

Tensor ids(const std::vector<int64_t>& values, DType dtype) {
  return Tensor::from_ints(values, {static_cast<int64_t>(values.size())}, dtype);
}

// ---- Pointwise: affine, SiLU, SwiGLU

TEST(CudaPointwise, AffineMatchesTheCpuBitForBit) {
  REQUIRE_GPU();
  // alpha * x + beta with both rounded to the compute type first and no FMA: the CPU's arithmetic.
  for (DType dtype : kFloatTypes) {
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1031}, int64_t{4099}}) {
      Tensor x = random_cpu({n}, 10 + n, dtype);
      const DType ref = gpu_testing::reference_dtype(dtype);
      for (auto f : {+[](const Tensor& t) { return scale(t, 0.3); },
                     +[](const Tensor& t) { return add_scalar(t, -1.7); }}) {
        EXPECT_EQ(bits_of(f(x.to(kGpu))), bits_of(f(x.to(ref)).to(dtype)))
            << dtype_name(dtype) << " n " << n;
        // A view one element in: the unaligned (scalar) path.
        EXPECT_EQ(bits_of(f(x.to(kGpu).narrow(0, 1, n - 1))),
                  bits_of(f(x.to(ref).narrow(0, 1, n - 1)).to(dtype)));
      }
    }
  }
}

TEST(CudaPointwise, SiluAndSwigluForwardAndBackward) {
  REQUIRE_GPU();
  const TensorFn silu_fn = [](const std::vector<Tensor>& in) { return silu(in[0]); };
  const TensorFn swiglu_fn = [](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); };
  for (DType dtype : kFloatTypes) {
    const Tol tol = for_dtype(dtype, kSigmoid);
    for (const Shape& shape : {Shape{0, 5}, Shape{1}, Shape{7}, Shape{33, 3}, Shape{4103}}) {
      // Gates over [-4, 4) cover the sigmoid's curved range; up and upstream in [-1, 1).
      Tensor gate = random_cpu(shape, 20, DType::kF64, -4.0, 4.0);
      Tensor up = random_cpu(shape, 21, DType::kF64);
      expect_op_matches(silu_fn, {gate}, dtype, tol, tol, "silu " + shape_str(shape));
      expect_op_matches(swiglu_fn, {gate, up}, dtype, tol, tol, "swiglu " + shape_str(shape));
    }
  }
}

// The backwards that also write the activation (backend.h; activation_linear.cc's fused pass): the
// activation bit for bit what the forward kernel writes and the gradients bit for bit the two-output
// kernel's, on the GPU; all three against the CPU within the pointwise tolerances. Aligned (128-bit)
// and one-element-offset (scalar) operands, whole chunks and tails.
TEST(CudaPointwise, BackwardsAlsoWriteTheForwardsActivation) {
  REQUIRE_GPU();
  Backend& gpu = backend_for(kGpu);
  Backend& cpu = backend_for(Device::cpu());
  // Every GPU operand sits `offset` elements into its buffer; outputs start as NaN.
  auto nan_gpu = [](int64_t n, DType dtype, int64_t offset) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return Tensor::full({n + offset}, nan, dtype, kGpu).narrow(0, offset, n);
  };
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const DType ref = gpu_testing::reference_dtype(dtype);
    const Tol tol = widen_for(dtype, kSigmoid);
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1031}, int64_t{4099}}) {
      for (int64_t offset : {int64_t{0}, int64_t{1}}) {
        const std::string what = std::string(dtype_name(dtype)) + " n " + std::to_string(n) +
                                 " offset " + std::to_string(offset);
        // Gates over [-4, 4), kSigmoid's range; up and the upstream gradient in [-1, 1).
        const Tensor gate = random_cpu({n}, 40, dtype, -4.0, 4.0), up = random_cpu({n}, 41, dtype),
                     g = random_cpu({n}, 42, dtype);
        auto on_gpu = [&](const Tensor& t) {
          Tensor d = Tensor::zeros({n + offset}, dtype, kGpu).narrow(0, offset, n);
          d.copy_(t.to(kGpu));
          return d;
        };
        const Tensor gate_d = on_gpu(gate), up_d = on_gpu(up), g_d = on_gpu(g);

        Tensor dgate = nan_gpu(n, dtype, offset), dup = nan_gpu(n, dtype, offset);
        Tensor a = nan_gpu(n, dtype, offset);
        gpu.swiglu_backward(gate_d, up_d, g_d, dgate, dup, a);
        Tensor dgate2 = nan_gpu(n, dtype, offset), dup2 = nan_gpu(n, dtype, offset);
        gpu.swiglu_backward(gate_d, up_d, g_d, dgate2, dup2, Tensor());
        EXPECT_EQ(bits_of(a), bits_of(swiglu(gate_d, up_d))) << what << " swiglu activation";
        EXPECT_EQ(bits_of(dgate), bits_of(dgate2)) << what << " dgate";
        EXPECT_EQ(bits_of(dup), bits_of(dup2)) << what << " dup";
        Tensor want_dgate = Tensor::zeros({n}, ref), want_dup = Tensor::zeros({n}, ref),
               want_a = Tensor::zeros({n}, ref);
        cpu.swiglu_backward(gate.to(ref), up.to(ref), g.to(ref), want_dgate, want_dup, want_a);
        expect_close(a, want_a, tol, what + " swiglu activation vs cpu");
        expect_close(dgate, want_dgate, tol, what + " dgate vs cpu");
        expect_close(dup, want_dup, tol, what + " dup vs cpu");

        Tensor dx = nan_gpu(n, dtype, offset), s = nan_gpu(n, dtype, offset);
        Tensor dx2 = nan_gpu(n, dtype, offset);
        gpu.silu_backward(gate_d, g_d, dx, s);
        gpu.silu_backward(gate_d, g_d, dx2, Tensor());
        EXPECT_EQ(bits_of(s), bits_of(silu(gate_d))) << what << " silu activation";
        EXPECT_EQ(bits_of(dx), bits_of(dx2)) << what << " dx";
        Tensor want_dx = Tensor::zeros({n}, ref), want_s = Tensor::zeros({n}, ref);
        cpu.silu_backward(gate.to(ref), g.to(ref), want_dx, want_s);
        expect_close(s, want_s, tol, what + " silu activation vs cpu");
        expect_close(dx, want_dx, tol, what + " dx vs cpu");
      }
    }
  }
}

// ---- Reductions

TEST(CudaReduce, SumsOverEveryDimensionAndShapeClass) {
  REQUIRE_GPU();
  struct Case {
    Shape shape;
    int64_t dim;  // -1000: the sum of everything
  };
  const Case cases[] = {
      {{5, 7, 3}, 0},     {{5, 7, 3}, 1},       {{5, 7, 3}, 2},   {{7, 1, 5}, 1},  // one-row sums
      {{3, 2000}, 1},                                                   // long rows, one chunk
      {{2, 40000}, 1},                                                  // long rows, three chunks
      {{1000, 33}, 0},                                                  // columns, eight chunks
      {{2, 1500, 45}, 1},  // columns, twelve chunks (more than the finish's 8 warps), 45 = 32 + 13 wide
      {{2, 300, 5}, 1},   {{1, 1}, 0},          {{100003}, -1000},   {{3, 0, 4}, 1},
      {{0, 5}, 1},        {{4, 5}, -1000}};
  for (DType dtype : kFloatTypes) {
    const Tol tol = for_dtype(dtype, kExactish);
    for (const Case& c : cases) {
      const int64_t dim = c.dim;
      const TensorFn f = [dim](const std::vector<Tensor>& in) {
        return dim == -1000 ? sum(in[0]) : sum(in[0], dim);
      };
      expect_op_matches(f, {random_cpu(c.shape, 30, DType::kF64)}, dtype, tol, tol,
                        "sum " + shape_str(c.shape) + " dim " + std::to_string(dim));
    }
    // mean = sum, then a scale: in bf16 each rounds, so two rounding steps against the CPU's one.
    const Tol mean_tol = widen_for(dtype, tol);
    const TensorFn m = [](const std::vector<Tensor>& in) { return mean(in[0], 0); };
    expect_op_matches(m, {random_cpu({513, 9}, 31, DType::kF64)}, dtype, mean_tol, mean_tol, "mean");
  }
}

TEST(CudaReduce, GradientNormAndClippingMatchTheCpu) {
  REQUIRE_GPU();
  // Squares of f32 (or bf16) values are exact in double and both sides sum them in double: they agree
  // to ~n * 2^-53 relative, far inside 1e-12.
  for (DType dtype : kFloatTypes) {
    std::vector<Tensor> cpu_params, gpu_params;
    int64_t seed = 40;
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{16385}, int64_t{100003}}) {
      Tensor g = random_cpu({n}, seed++, dtype);
      Tensor p_cpu = Tensor::zeros({n}, gpu_testing::reference_dtype(dtype));
      p_cpu.set_grad(g.to(p_cpu.dtype()));
      Tensor p_gpu = Tensor::zeros({n}, dtype, kGpu);
      p_gpu.set_grad(g.to(kGpu));
      cpu_params.push_back(p_cpu);
      gpu_params.push_back(p_gpu);
    }
    const double want = grad_global_norm(cpu_params);
    EXPECT_NEAR(grad_global_norm(gpu_params), want, 1e-12 * want) << dtype_name(dtype);
    // Clipping scales every gradient in place by max_norm / norm (affine on the GPU).
    const double max_norm = want / 3;
    clip_grad_norm(cpu_params, max_norm);
    clip_grad_norm(gpu_params, max_norm);
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      expect_close(gpu_params[i].grad(), cpu_params[i].grad(), widen_for(dtype, {1e-12, 2 * kF32Ulp}),
                   "clipped gradient");
    }
  }
}

// ---- Indexing: gathers, deterministic scatter-adds, embedding

TEST(CudaIndex, EmbeddingWithI32AndI64IdsIsExactForwardAndBackward) {
  REQUIRE_GPU();
  // index_select copies; the backward's index_add adds repeated rows in position order, in the
  // compute type, exactly as the CPU does: f32 and f64 results are bit-identical, bf16 ones are the
  // CPU's f32 results rounded once.
  const std::vector<int64_t> tokens = {3, 0, 49, 3, 3, 17, 0, 48, 3, 5, 5, 22, 3, 49,
                                       1, 2, 3, 4, 3, 0, 17, 9, 9, 9, 3, 30, 31, 49};
  for (DType dtype : kFloatTypes) {
    for (DType id_dtype : {DType::kI32, DType::kI64}) {
      Tensor weight = random_cpu({50, 33}, 50, dtype);
      Tensor id = Tensor::from_ints(tokens, {4, 7}, id_dtype);
      Tensor upstream = random_cpu({4, 7, 33}, 51, dtype);
      const DType ref = gpu_testing::reference_dtype(dtype);
      Tensor w_cpu = gpu_testing::leaf(weight.to(ref)), w_gpu = gpu_testing::leaf(weight.to(kGpu));
      Tensor e_cpu = embedding(w_cpu, id), e_gpu = embedding(w_gpu, id.to(kGpu));
      EXPECT_EQ(bits_of(e_gpu), bits_of(e_cpu.to(dtype))) << dtype_name(dtype);
      e_cpu.backward(upstream.to(ref));
      e_gpu.backward(upstream.to(kGpu));
      // A bf16 leaf's gradient buffer is f32 (autograd.cc), holding the bf16 kernel's result exactly.
      EXPECT_EQ(bits_of(w_gpu.grad().to(dtype)), bits_of(w_cpu.grad().to(dtype)))
          << dtype_name(dtype) << " ids " << dtype_name(id_dtype);
    }
  }
}

TEST(CudaIndex, SelectAndAddAlongInnerDimensionsAndEmptyIndex) {
  REQUIRE_GPU();
  for (DType dtype : kFloatTypes) {
    const DType ref = gpu_testing::reference_dtype(dtype);
    Tensor x = random_cpu({3, 10, 5}, 60, dtype);
    for (int64_t dim : {0, 1, 2}) {
      const int64_t n = x.size(dim);
      Tensor index = ids({n - 1, 0, 2 % n, n - 1, 1 % n, n - 1, 0}, DType::kI32);
      EXPECT_EQ(bits_of(index_select(x.to(kGpu), dim, index.to(kGpu))),
                bits_of(index_select(x.to(ref), dim, index).to(dtype)))
          << dtype_name(dtype) << " dim " << dim;
      Shape src_shape = x.shape();
      src_shape[dim] = index.numel();
      Tensor src = random_cpu(src_shape, 61 + dim, dtype);
      EXPECT_EQ(bits_of(index_add(x.to(kGpu), dim, index.to(kGpu), src.to(kGpu))),
                bits_of(index_add(x.to(ref), dim, index, src.to(ref)).to(dtype)))
          << dtype_name(dtype) << " dim " << dim;
    }
    Tensor none = ids({}, DType::kI64);
    EXPECT_EQ(index_select(x.to(kGpu), 1, none.to(kGpu)).shape(), (Shape{3, 0, 5}));
    EXPECT_EQ(bits_of(index_add(x.to(kGpu), 1, none.to(kGpu), Tensor::zeros({3, 0, 5}, dtype, kGpu))),
              bits_of(x));
  }
}

// ---- RMSNorm and RoPE

TEST(CudaNorm, RmsNormForwardAndBackward) {
  REQUIRE_GPU();
  const TensorFn f = [](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 1e-5); };
  for (DType dtype : kFloatTypes) {
    const Tol tol = for_dtype(dtype, kExactish);
    // [300, 50] and [300, 64]: the weight gradient sums 38 blocks of 8 rows, one element and 16
    // bytes at a time; [33, 768] takes 16-byte chunks (and [7, 33] single elements) in every kernel;
    // [2, 3, 7]: a 3-d input.
    for (const Shape& shape : {Shape{1, 1}, Shape{7, 33}, Shape{33, 768}, Shape{300, 50}, Shape{300, 64},
                               Shape{2, 3, 7}, Shape{0, 8}}) {
      Tensor x = random_cpu(shape, 70, DType::kF64);
      Tensor w = random_cpu({shape.back()}, 71, DType::kF64, 0.5, 1.5);
      expect_op_matches(f, {x, w}, dtype, tol, tol, "rmsnorm " + shape_str(shape));
    }
    // Rows one element past a 16-byte boundary (a view at offset 1 of a padded buffer): the kernels
    // that would take 16-byte chunks of a 768-wide row must read it one element at a time.
    const TensorFn shifted = [](const std::vector<Tensor>& in) {
      const Tensor& x = in[0];
      const Tensor padded = concat({Tensor::zeros({1}, x.dtype(), x.device()), x.reshape({-1})}, 0);
      return rmsnorm(padded.narrow(0, 1, x.numel()).reshape(x.shape()), in[1], 1e-5);
    };
    expect_op_matches(shifted, {random_cpu({33, 768}, 72, DType::kF64), random_cpu({768}, 73, DType::kF64, 0.5, 1.5)},
                      dtype, tol, tol, "rmsnorm of misaligned rows");
  }
}

// add_rmsnorm and the GPU's own add then rmsnorm, each followed by out = sum + normed * m and the same
// upstream gradient: the outputs and every gradient bit for bit (the fused kernels share the plain
// ones' expressions and order, norm.h). Every tensor here is freshly allocated, so both take 16-byte
// chunks where the width allows.
void expect_gpu_fused_equals_unfused(const Shape& shape, DType dtype, uint64_t seed) {
  auto on_gpu = [dtype](const Tensor& t) { return t.to(dtype).to(kGpu); };
  const Tensor x = on_gpu(random_cpu(shape, seed, DType::kF64));
  const Tensor delta = on_gpu(random_cpu(shape, seed + 1, DType::kF64));
  const Tensor w = on_gpu(random_cpu({shape.back()}, seed + 2, DType::kF64, 0.5, 1.5));
  const Tensor m = on_gpu(random_cpu(shape, seed + 3, DType::kF64));
  const Tensor upstream = on_gpu(random_cpu(shape, seed + 4, DType::kF64));
  const std::vector<Tensor> fused = {gpu_testing::leaf(x), gpu_testing::leaf(delta), gpu_testing::leaf(w)};
  const std::vector<Tensor> unfused = {gpu_testing::leaf(x), gpu_testing::leaf(delta), gpu_testing::leaf(w)};
  const ResidualNorm got = add_rmsnorm(fused[0], fused[1], fused[2], 1e-5);
  add(got.sum, mul(got.normed, m)).backward(upstream);
  const Tensor h = add(unfused[0], unfused[1]);
  const Tensor n = rmsnorm(h, unfused[2], 1e-5);
  add(h, mul(n, m)).backward(upstream);
  const std::string what = "add_rmsnorm " + shape_str(shape) + " (" + std::string(dtype_name(dtype)) + ")";
  EXPECT_EQ(bits_of(got.sum), bits_of(h)) << what << ": sum";
  EXPECT_EQ(bits_of(got.normed), bits_of(n)) << what << ": normed";
  const char* names[] = {"x", "delta", "weight"};
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(bits_of(fused[k].grad()), bits_of(unfused[k].grad())) << what << ": gradient of " << names[k];
  }
}

// The fused op against the CPU's (forward and every gradient; the upstream gradient reaches both
// outputs through their concatenation) in f32 and f64, where the CPU computes in the same dtype and
// kExactish holds as for rmsnorm. bf16 is checked against the GPU's unfused add and rmsnorm bit for
// bit, which CudaNorm.RmsNormForwardAndBackward checks against the CPU (a bf16 sum differs from the
// CPU's f32 one by its rounding, which the norm then amplifies past the widened tolerance).
TEST(CudaNorm, AddRmsNormMatchesTheCpuAndTheUnfusedKernels) {
  REQUIRE_GPU();
  const TensorFn f = [](const std::vector<Tensor>& in) {
    const ResidualNorm out = add_rmsnorm(in[0], in[1], in[2], 1e-5);
    return concat({out.sum, out.normed}, 0);
  };
  for (DType dtype : kFloatTypes) {
    const Tol tol = for_dtype(dtype, kExactish);
    // As the rmsnorm test: 38 row blocks of the weight gradient ([300, 50], [300, 64]), 16-byte
    // chunks ([33, 768]) and single elements ([7, 33]), a 3-d input.
    for (const Shape& shape : {Shape{1, 1}, Shape{7, 33}, Shape{33, 768}, Shape{300, 50}, Shape{300, 64},
                               Shape{2, 3, 7}}) {
      expect_gpu_fused_equals_unfused(shape, dtype, 90);
      if (dtype == DType::kBF16) continue;
      const std::vector<Tensor> in = {random_cpu(shape, 91, DType::kF64), random_cpu(shape, 92, DType::kF64),
                                      random_cpu({shape.back()}, 93, DType::kF64, 0.5, 1.5)};
      expect_op_matches(f, in, dtype, tol, tol, "add_rmsnorm " + shape_str(shape));
    }
    if (dtype == DType::kBF16) continue;
    // delta's rows one element past a 16-byte boundary: every kernel reads the rows one element at a
    // time.
    const TensorFn shifted = [](const std::vector<Tensor>& in) {
      const Tensor& d = in[1];
      const Tensor padded = concat({Tensor::zeros({1}, d.dtype(), d.device()), d.reshape({-1})}, 0);
      const ResidualNorm out =
          add_rmsnorm(in[0], padded.narrow(0, 1, d.numel()).reshape(d.shape()), in[2], 1e-5);
      return concat({out.sum, out.normed}, 0);
    };
    expect_op_matches(shifted,
                      {random_cpu({33, 768}, 94, DType::kF64), random_cpu({33, 768}, 95, DType::kF64),
                       random_cpu({768}, 96, DType::kF64, 0.5, 1.5)},
                      dtype, tol, tol, "add_rmsnorm of misaligned rows");
  }
}

TEST(CudaNorm, RopeForwardAndInverseWithI32AndI64Positions) {
  REQUIRE_GPU();
  // Angles up to 1e5 radians, formed in double on both sides: the device's pow (<= 2 ulp) and the
  // product leave them ~1e-10 apart, which moves outputs of |x| < 1 by as much; f64 results are
  // compared at 1e-9 absolute, f32 ones at one rounding step plus that.
  for (DType dtype : kFloatTypes) {
    const Tol tol = dtype == DType::kF64 ? Tol{1e-9, 1e-12} : Tol{1e-9, 2 * kF32Ulp};
    for (DType pos_dtype : {DType::kI32, DType::kI64}) {
      // The 360m shapes' heads among them. Positions scattered up to 1e5 lie mostly beyond the rows,
      // where the kernel forms the angles itself; those of packed sequences (row % 37) lie below the
      // row count, where it reads the device's table (Note [RoPE's table]).
      for (const Shape& shape : {Shape{1, 1, 2}, Shape{5, 3, 8}, Shape{33, 2, 64}, Shape{17, 15, 64},
                                 Shape{9, 5, 128}, Shape{300, 5, 64}}) {
        for (bool packed : {false, true}) {
          std::vector<int64_t> pos;
          for (int64_t r = 0; r < shape[0]; ++r) pos.push_back(packed ? r % 37 : (r * 7919 + 13) % 100003);
          Tensor positions = ids(pos, pos_dtype);
          const TensorFn f = [](const std::vector<Tensor>& in) { return rope(in[0], in[1], 10000.0); };
          expect_op_matches(f, {random_cpu(shape, 80, DType::kF64), positions}, dtype, tol, tol,
                            "rope " + shape_str(shape) + (packed ? " packed" : " scattered"));
        }
      }
    }
  }
}

// ---- Softmax

// GPU softmax of x (rounded to dtype) and its backward against the CPU's, per element relative to
// the reference probability y_i. f32: exp(x - max) / sum with x - max rounded in f32 (<= 4.8e-7 absolute
// for |x - max| < 8), expf (<= 2 ulp) and a double sum: <= ~8e-7 relative, so 2e-6 * y_i. The backward
// y_i (dy_i - dot) inherits y's error and dot's (<= 2e-6 since sum y = 1 and |dy| <= 1): 6e-6 * y_i.
// bf16: y itself is rounded (2^-9), which moves dot by <= 2^-9, so 2^-6 * y_i covers the backward.
void expect_softmax_matches(const Shape& shape, DType dtype, uint64_t seed) {
  const DType ref = gpu_testing::reference_dtype(dtype);
  Tensor x = random_cpu(shape, seed, dtype, -4.0, 4.0);
  Tensor upstream = random_cpu(shape, seed + 1, dtype);
  Tensor x_cpu = gpu_testing::leaf(x.to(ref)), x_gpu = gpu_testing::leaf(x.to(kGpu));
  Tensor y_cpu = softmax(x_cpu), y_gpu = softmax(x_gpu);
  y_cpu.backward(upstream.to(ref));
  y_gpu.backward(upstream.to(kGpu));
  const std::vector<double> y = y_cpu.to_vector();
  const bool f64 = dtype == DType::kF64, bf16 = dtype == DType::kBF16;
  std::vector<double> forward_tol(y.size()), backward_tol(y.size());
  for (size_t i = 0; i < y.size(); ++i) {
    forward_tol[i] = f64 ? 1e-13 * y[i] + 1e-300 : (bf16 ? 2e-6 + kBf16Rounding : 2e-6) * y[i];
    backward_tol[i] = f64 ? 1e-13 * y[i] + 1e-300 : (bf16 ? 1.0 / 64 : 6e-6) * y[i];
  }
  const std::string what = "softmax " + shape_str(shape) + " " + std::string(dtype_name(dtype));
  expect_within(y_gpu.to_vector(), y, forward_tol, what + " forward");
  expect_within(x_gpu.grad().to_vector(), x_cpu.grad().to_vector(), backward_tol, what + " backward");
}

TEST(CudaSoftmax, NarrowAndWideRowsForwardAndBackward) {
  REQUIRE_GPU();
  // Width 2 is the router's; up to 32 columns a thread owns a row, beyond a block does; 33 and
  // 50304 are the first wide width and the padded vocabulary.
  for (DType dtype : kFloatTypes) {
    uint64_t seed = 90;
    for (const Shape& shape : {Shape{1025, 2}, Shape{1, 1}, Shape{7, 1}, Shape{9, 32}, Shape{5, 33},
                               Shape{3, 64}, Shape{4, 1000}, Shape{2, 50304}, Shape{2, 3, 5},
                               Shape{0, 5}}) {
      expect_softmax_matches(shape, dtype, seed += 2);
    }
  }
}

// ---- Cross-entropy

// Logits [N, V] in [-4, 4) with the padded classes (>= num_classes) at +30: leaking them into a
// log-sum-exp would move every loss by ~20.
Tensor ce_logits(int64_t n, int64_t v, int64_t num_classes, uint64_t seed) {
  std::vector<double> values = random_cpu({n, v}, seed, DType::kF64, -4.0, 4.0).to_vector();
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = num_classes; i < v; ++i) values[r * v + i] = 30.0;
  }
  return Tensor::from_vector(values, {n, v}, DType::kF64);
}

// Per-row losses differ by the GPU's lse error (expf terms of <= 2 ulp and x - max rounded in f32:
// <= 7e-7 relative in the sum, so absolute in the log) plus each side's f32 rounding of a value
// ~12: 2e-6 absolute; means and sums add one rounding step.
constexpr Tol kLossTol{4e-6, 2 * kF32Ulp};

// Tolerance of dlogits = c (p - onehot) per element, relative to the reference probability p: the
// GPU's p = exp(x - lse) differs by the lse (one f32 step, ~1e-6, at ~12), the f32 rounding of
// x - lse (~1e-6) and expf (2 ulp): 5e-6 * |c| p, plus the result's own rounding.
std::vector<double> ce_gradient_tolerance(const std::vector<double>& want,
                                          const std::vector<int64_t>& targets, int64_t v,
                                          double coef, DType dtype) {
  std::vector<double> tol(want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const int64_t row = static_cast<int64_t>(i) / v, col = static_cast<int64_t>(i) % v;
    const double p = coef == 0 ? 0 : want[i] / coef + (col == targets[row] ? 1.0 : 0.0);
    const double rounding = dtype == DType::kBF16 ? kBf16Rounding : 2 * kF32Ulp;
    tol[i] = dtype == DType::kF64 ? 1e-13 * std::fabs(coef) + 1e-300
                                  : 5e-6 * std::fabs(coef) * p + rounding * std::fabs(want[i]);
  }
  return tol;
}

struct CeCase {
  int64_t n, v, num_classes, ignore_index;
  std::vector<int64_t> targets;
};

std::vector<CeCase> ce_cases() {
  std::vector<CeCase> cases = {
      {3, 1, 1, -100, {0, -100, 0}},              // one class: loss 0, gradient 0
      {6, 7, 5, -100, {0, 4, -100, 2, -100, 1}},  // padded classes, ignored rows
      {6, 7, 7, 3, {3, 0, 6, 3, 1, 2}},           // ignore_index that is also a class id
      {5, 33, 33, -100, {32, 0, 7, 7, 16}},
      {4, 4096, 4000, -100, {3999, -100, 0, 2048}},  // rows staged in shared memory for every dtype
  };
  CeCase vocab{8, 50304, 50257, -100, {}};
  for (int64_t r = 0; r < vocab.n; ++r) vocab.targets.push_back(r == 3 ? -100 : (r * 7919) % 50257);
  vocab.targets[5] = 50256;  // the last real class
  cases.push_back(vocab);
  return cases;
}

// The gradient is made in the forward for the expected upstream (2.5 here): handed on as it is when the
// backward receives 2.5, scaled by a second pass when the forward expected 1 (one more rounding).
TEST(CudaCrossEntropy, LossAndGradientThroughTheOp) {
  REQUIRE_GPU();
  const double upstream = 2.5;
  for (DType dtype : kFloatTypes) {
    for (DType target_dtype : {DType::kI32, DType::kI64}) {
      for (const CeCase& c : ce_cases()) {
        for (double expected : {upstream, 1.0}) {
          Tensor logits = ce_logits(c.n, c.v, c.num_classes, 100 + c.v).to(dtype);
          Tensor targets = ids(c.targets, target_dtype);
          const DType ref = gpu_testing::reference_dtype(dtype);
          Tensor l_cpu = gpu_testing::leaf(logits.to(ref)), l_gpu = gpu_testing::leaf(logits.to(kGpu));
          Tensor loss_cpu = cross_entropy(l_cpu, targets, c.ignore_index, c.num_classes);
          Tensor loss_gpu = cross_entropy(l_gpu, targets.to(kGpu), c.ignore_index, c.num_classes, expected);
          const std::string what = "cross_entropy V " + std::to_string(c.v) + " " +
                                   std::string(dtype_name(dtype)) + " expecting " + std::to_string(expected);
          expect_close(loss_gpu, loss_cpu, dtype == DType::kF64 ? kF64 : kLossTol, what + " loss");
          scale(loss_cpu, upstream).backward();
          scale(loss_gpu, upstream).backward();
          int64_t kept = 0;
          for (int64_t t : c.targets) kept += t != c.ignore_index;
          const std::vector<double> want = l_cpu.grad().to_vector();
          std::vector<double> tol = ce_gradient_tolerance(want, c.targets, c.v, upstream / kept, dtype);
          if (expected != upstream && dtype != DType::kF64) {  // the scaling pass rounds once more
            const double rounding = dtype == DType::kBF16 ? kBf16Rounding : 2 * kF32Ulp;
            for (size_t i = 0; i < tol.size(); ++i) tol[i] += rounding * std::fabs(want[i]);
          }
          expect_within(l_gpu.grad().to_vector(), want, tol, what + " gradient");
        }
      }
    }
  }
}

TEST(CudaCrossEntropy, AllRowsIgnoredOrNoRowsGiveZeroLossAndGradient) {
  REQUIRE_GPU();
  Tensor logits = gpu_testing::leaf(random_cpu({3, 5}, 110).to(kGpu));
  Tensor loss = cross_entropy(logits, ids({-100, -100, -100}, DType::kI64).to(kGpu));
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  for (double g : logits.grad().to_vector()) EXPECT_EQ(g, 0.0);
  // No rows at all: the same zero loss, an empty gradient.
  Tensor none = gpu_testing::leaf(Tensor::zeros({0, 5}, DType::kF32, kGpu));
  Tensor empty_loss = cross_entropy(none, Tensor::zeros({0}, DType::kI64, kGpu));
  EXPECT_EQ(empty_loss.item(), 0.0);
  empty_loss.backward();
  EXPECT_EQ(none.grad().shape(), (Shape{0, 5}));
}

// AdamW on the GPU: optim_test.cc (CudaAdamW, the multi-tensor update the optimizer runs).

// ---- Every output element is written: the kernels called directly (backend.h), the GPU's outputs
// filled with NaN first, against the CPU backend's kernels on the same f32 inputs.

struct OutputSpec {
  Shape shape;
  DType dtype;
  Tol tol;
};
using KernelFn = std::function<void(Backend&, const std::vector<Tensor>&, const std::vector<Tensor>&)>;

void expect_kernel_writes_every_element(const std::string& what, const KernelFn& run,
                                        const std::vector<Tensor>& inputs,
                                        const std::vector<OutputSpec>& outputs) {
  std::vector<Tensor> gpu_inputs, cpu_out, gpu_out;
  for (const Tensor& x : inputs) gpu_inputs.push_back(x.to(kGpu));
  for (const OutputSpec& o : outputs) {
    cpu_out.push_back(Tensor::zeros(o.shape, o.dtype));
    gpu_out.push_back(Tensor::full(o.shape, std::numeric_limits<double>::quiet_NaN(), o.dtype, kGpu));
  }
  run(backend_for(Device::cpu()), inputs, cpu_out);
  run(backend_for(kGpu), gpu_inputs, gpu_out);
  for (size_t k = 0; k < outputs.size(); ++k) {
    expect_close(gpu_out[k], cpu_out[k], outputs[k].tol, what + " output " + std::to_string(k));
  }
}

TEST(CudaKernels, PointwiseAndReductionsWriteEveryElement) {
  REQUIRE_GPU();
  const int64_t n = 1031;  // 257 chunks of 4 f32 and a tail of 3
  Tensor x = random_cpu({n}, 300, DType::kF32, -4.0, 4.0), u = random_cpu({n}, 301);
  Tensor g = random_cpu({n}, 302);
  const OutputSpec one{{n}, DType::kF32, kSigmoid};
  expect_kernel_writes_every_element(
      "affine", [](Backend& b, auto& in, auto& out) { b.affine(in[0], -0.7, 0.25, out[0]); }, {x},
      {{{n}, DType::kF32, {0, 0}}});
  expect_kernel_writes_every_element(
      "silu", [](Backend& b, auto& in, auto& out) { b.silu(in[0], out[0]); }, {x}, {one});
  expect_kernel_writes_every_element(
      "silu_backward",
      [](Backend& b, auto& in, auto& out) { b.silu_backward(in[0], in[1], out[0], Tensor()); }, {x, g},
      {one});
  expect_kernel_writes_every_element(
      "silu_backward with the activation",
      [](Backend& b, auto& in, auto& out) { b.silu_backward(in[0], in[1], out[0], out[1]); }, {x, g},
      {one, one});
  expect_kernel_writes_every_element(
      "swiglu", [](Backend& b, auto& in, auto& out) { b.swiglu(in[0], in[1], out[0]); }, {x, u}, {one});
  expect_kernel_writes_every_element(
      "swiglu_backward",
      [](Backend& b, auto& in, auto& out) {
        b.swiglu_backward(in[0], in[1], in[2], out[0], out[1], Tensor());
      },
      {x, u, g}, {one, one});
  expect_kernel_writes_every_element(
      "swiglu_backward with the activation",
      [](Backend& b, auto& in, auto& out) {
        b.swiglu_backward(in[0], in[1], in[2], out[0], out[1], out[2]);
      },
      {x, u, g}, {one, one, one});

  // [outer, n, inner]: long rows in one and in three chunks, columns in three chunks, short columns.
  for (const Shape& geometry : {Shape{3, 5000, 1}, Shape{1, 40000, 1}, Shape{2, 300, 7}, Shape{4, 3, 5}}) {
    const int64_t outer = geometry[0], len = geometry[1], inner = geometry[2];
    expect_kernel_writes_every_element(
        "sum_dim " + shape_str(geometry),
        [=](Backend& b, auto& in, auto& out) { b.sum_dim(in[0], outer, len, inner, out[0]); },
        {random_cpu({outer * len * inner}, 310)}, {{{outer, inner}, DType::kF32, kExactish}});
  }
  expect_kernel_writes_every_element(
      "index_select",
      [](Backend& b, auto& in, auto& out) { b.index_select(in[0], 2, 10, 3, in[1], out[0]); },
      {random_cpu({2, 10, 3}, 320), ids({9, 0, 4, 4, 9, 1, 7}, DType::kI64)},
      {{{2, 7, 3}, DType::kF32, {0, 0}}});
}

TEST(CudaKernels, NormRopeAndSoftmaxWriteEveryElement) {
  REQUIRE_GPU();
  Backend& cpu = backend_for(Device::cpu());
  // 300 rows: the weight gradient sums 38 blocks of rows.
  Tensor x = random_cpu({300, 33}, 330), w = random_cpu({33}, 331, DType::kF32, 0.5, 1.5);
  Tensor y = Tensor::zeros({300, 33}), rstd = Tensor::zeros({300});
  cpu.rmsnorm(x, w, 1e-5, y, rstd);
  expect_kernel_writes_every_element(
      "rmsnorm", [](Backend& b, auto& in, auto& out) { b.rmsnorm(in[0], in[1], 1e-5, out[0], out[1]); },
      {x, w}, {{{300, 33}, DType::kF32, kExactish}, {{300}, DType::kF32, kExactish}});
  expect_kernel_writes_every_element(
      "rmsnorm_backward",
      [](Backend& b, auto& in, auto& out) {
        b.rmsnorm_backward(in[0], in[1], in[2], in[3], out[0], out[1]);
      },
      {x, w, rstd, random_cpu({300, 33}, 332)},
      {{{300, 33}, DType::kF32, kExactish}, {{33}, DType::kF32, kExactish}});
  // The fused kernels: h is the f32 sum on both backends (exact), y and rstd as rmsnorm's; dx as
  // rmsnorm_backward's plus one f32 addition on both sides.
  expect_kernel_writes_every_element(
      "add_rmsnorm",
      [](Backend& b, auto& in, auto& out) { b.add_rmsnorm(in[0], in[1], in[2], 1e-5, out[0], out[1], out[2]); },
      {x, random_cpu({300, 33}, 334), w},
      {{{300, 33}, DType::kF32, {0, 0}}, {{300, 33}, DType::kF32, kExactish}, {{300}, DType::kF32, kExactish}});
  expect_kernel_writes_every_element(
      "add_rmsnorm_backward",
      [](Backend& b, auto& in, auto& out) {
        b.add_rmsnorm_backward(in[0], in[1], in[2], in[3], in[4], out[0], out[1]);
      },
      {x, w, rstd, random_cpu({300, 33}, 332), random_cpu({300, 33}, 335)},
      {{{300, 33}, DType::kF32, kExactish}, {{33}, DType::kF32, kExactish}});
  for (bool inverse : {false, true}) {
    expect_kernel_writes_every_element(
        "rope",
        [inverse](Backend& b, auto& in, auto& out) { b.rope(in[0], in[1], 500.0, inverse, out[0]); },
        {random_cpu({7, 3, 10}, 333), ids({0, 5, 99999, 3, 3, 1, 70000}, DType::kI32)},
        {{{7, 3, 10}, DType::kF32, {1e-9, 2 * kF32Ulp}}});
  }
  // Narrow rows, wide rows that are not 16-byte aligned (50 f32) and wide rows that are (64 f32).
  for (const Shape& shape : {Shape{9, 2}, Shape{5, 50}, Shape{3, 64}}) {
    Tensor logits = random_cpu(shape, 340, DType::kF32, -4.0, 4.0);
    Tensor probs = Tensor::zeros(shape);
    cpu.softmax(logits, probs);
    expect_kernel_writes_every_element(
        "softmax " + shape_str(shape), [](Backend& b, auto& in, auto& out) { b.softmax(in[0], out[0]); },
        {logits}, {{shape, DType::kF32, {1e-12, 2e-6}}});
    // Given the same y both sides evaluate y (dy - dot) in double: kExactish.
    expect_kernel_writes_every_element(
        "softmax_backward " + shape_str(shape),
        [](Backend& b, auto& in, auto& out) { b.softmax_backward(in[0], in[1], out[0]); },
        {probs, random_cpu(shape, 341)}, {{shape, DType::kF32, kExactish}});
  }
}

TEST(CudaKernels, CrossEntropyKernelsWriteEveryElementAndWorkInPlace) {
  REQUIRE_GPU();
  Backend& cpu = backend_for(Device::cpu());
  const int64_t n = 6, v = 50304, classes = 50257;
  const std::vector<int64_t> t = {7, -100, 50256, 0, -100, 31337};
  Tensor logits = ce_logits(n, v, classes, 350).to(DType::kF32);
  Tensor targets = ids(t, DType::kI32);
  const double scale = 1.0 / 4, upstream = 2.5;  // four kept rows
  const Tol stats{2e-6, 2 * kF32Ulp};
  // Given the CPU's lse, p differs only through expf and the f32 rounding of x - lse (~1.2e-6).
  const Tol grads{5e-6 * upstream * scale, 2 * kF32Ulp};
  Tensor losses = Tensor::zeros({n}), lse = Tensor::zeros({n});
  cpu.cross_entropy(logits, targets, -100, classes, losses, lse);
  expect_kernel_writes_every_element(
      "cross_entropy",
      [&](Backend& b, auto& in, auto& out) { b.cross_entropy(in[0], in[1], -100, classes, out[0], out[1]); },
      {logits, targets}, {{{n}, DType::kF32, stats}, {{n}, DType::kF32, stats}});
  // The upstream gradient is a device tensor the kernel reads.
  expect_kernel_writes_every_element(
      "cross_entropy_backward",
      [&](Backend& b, auto& in, auto& out) {
        b.cross_entropy_backward(in[0], in[1], -100, classes, in[2], in[3], scale, out[0]);
      },
      {logits, targets, lse, Tensor::full({}, upstream)}, {{{n, v}, DType::kF32, grads}});
  expect_kernel_writes_every_element(
      "cross_entropy_fused",
      [&](Backend& b, auto& in, auto& out) {
        b.cross_entropy_fused(in[0], in[1], -100, classes, upstream * scale, out[0], out[1], out[2]);
      },
      {logits, targets},
      {{{n}, DType::kF32, stats}, {{n}, DType::kF32, stats}, {{n, v}, DType::kF32, grads}});

  // In place (dlogits over the logits), in f32 and bf16: the same bits as out of place.
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Tensor l_gpu = logits.to(dtype).to(kGpu), tg = targets.to(kGpu);
    Tensor out_of_place = Tensor::empty({n, v}, dtype, kGpu);
    Tensor l1 = Tensor::empty({n}, DType::kF32, kGpu), s1 = Tensor::empty({n}, DType::kF32, kGpu);
    Tensor l2 = Tensor::empty({n}, DType::kF32, kGpu), s2 = Tensor::empty({n}, DType::kF32, kGpu);
    Backend& gpu = backend_for(kGpu);
    gpu.cross_entropy_fused(l_gpu, tg, -100, classes, scale, l1, s1, out_of_place);
    gpu.cross_entropy_fused(l_gpu, tg, -100, classes, scale, l2, s2, l_gpu);
    EXPECT_EQ(bits_of(l_gpu), bits_of(out_of_place)) << dtype_name(dtype);
    EXPECT_EQ(bits_of(l2), bits_of(l1));
    EXPECT_EQ(bits_of(s2), bits_of(s1));
  }
}

// ---- Determinism: no atomics, fixed reduction orders (Note [Deterministic reductions]).

TEST(CudaDeterminism, ScatterNormAndSumsAreBitIdenticalRunToRun) {
  REQUIRE_GPU();
  // The embedding backward's shape of problem: 20000 positions onto 50 rows, ~400 repeats each. The
  // order of additions is the CPU's, so f32 results are also the CPU's bits.
  std::vector<int64_t> positions(20000);
  for (size_t j = 0; j < positions.size(); ++j) positions[j] = (j * 7919) % 50;
  Tensor index = ids(positions, DType::kI64);
  Tensor src = random_cpu({20000, 64}, 360), base = random_cpu({50, 64}, 361);
  Tensor first = index_add(base.to(kGpu), 0, index.to(kGpu), src.to(kGpu));
  Tensor second = index_add(base.to(kGpu), 0, index.to(kGpu), src.to(kGpu));
  EXPECT_EQ(bits_of(first), bits_of(second));
  EXPECT_EQ(bits_of(first), bits_of(index_add(base, 0, index, src)));

  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Tensor x = random_cpu({1000, 96}, 362, dtype).to(kGpu), dy = random_cpu({1000, 96}, 363, dtype);
    std::vector<std::vector<uint64_t>> dw;
    for (int run = 0; run < 2; ++run) {
      Tensor w = gpu_testing::leaf(random_cpu({96}, 364, dtype).to(kGpu));
      rmsnorm(x, w, 1e-5).backward(dy.to(kGpu));
      dw.push_back(bits_of(w.grad()));
    }
    EXPECT_EQ(dw[0], dw[1]) << dtype_name(dtype);
    Tensor big = random_cpu({200003}, 365, dtype).to(kGpu), cols = random_cpu({3000, 40}, 366, dtype).to(kGpu);
    EXPECT_EQ(bits_of(sum(big)), bits_of(sum(big)));
    EXPECT_EQ(bits_of(sum(cols, 0)), bits_of(sum(cols, 0)));
  }
}

}  // namespace
}  // namespace dtrn
