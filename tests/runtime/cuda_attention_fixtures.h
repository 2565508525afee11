// What the CUDA attention tests share (cuda_attention_test.cc, cuda_attention_fused_test.cc):
// inputs drawn on the CPU in the tested dtype, the kernels run through the backend table with their
// outputs poisoned with NaN, the CPU f64 reference, tolerances and the sequence layouts.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../../runtime/src/backend.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/tensor.h"

#ifdef DTRN_WITH_CUDA
#include "../../runtime/src/cuda/wgmma_support.h"
#endif

namespace dtrn::attention_fixtures {

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no GPU"

inline const Device kGpu = Device::cuda(0);

// Why the wgmma forward does not run here (empty where it does).
inline std::string wgmma_skip_reason() {
#ifdef DTRN_WITH_CUDA
  return cuda::wgmma_unavailable_reason(0);
#else
  return "no CUDA backend";
#endif
}

#define REQUIRE_WGMMA() \
  REQUIRE_GPU();        \
  if (const std::string why = wgmma_skip_reason(); !why.empty()) GTEST_SKIP() << why

// An environment variable set for the guard's lifetime (the backend reads DTRN_ATTENTION_KERNEL and
// DTRN_ATTENTION_BACKWARD on every call).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

class KernelChoice : public ScopedEnv {
 public:
  explicit KernelChoice(const char* value) : ScopedEnv("DTRN_ATTENTION_KERNEL", value) {}
};

class BackwardChoice : public ScopedEnv {
 public:
  explicit BackwardChoice(const char* value) : ScopedEnv("DTRN_ATTENTION_BACKWARD", value) {}
};

struct Problem {
  std::vector<int64_t> lens;  // sequence lengths, packed in order
  int64_t h, g, d;
  DType dtype;
};

inline std::string describe(const Problem& p) {
  std::ostringstream s;
  s << dtype_name(p.dtype) << " H " << p.h << " G " << p.g << " D " << p.d << " lengths";
  for (int64_t len : p.lens) s << " " << len;
  return s.str();
}

// Inputs and the output gradient on the CPU, drawn in f64 and rounded to the problem's dtype; q and
// k span [-2, 2] so that the softmax rows are far from uniform.
struct Inputs {
  Tensor q, k, v, dout, cu_seqlens;
};

inline Inputs make_inputs(const Problem& p, uint64_t seed) {
  std::vector<int64_t> offsets = {0};
  for (int64_t len : p.lens) offsets.push_back(offsets.back() + len);
  const int64_t n = offsets.back();
  const auto draw = [&](const Shape& shape, double bound, uint64_t stream) {
    return Tensor::uniform(shape, -bound, bound, seed, stream, 0, DType::kF64).to(p.dtype);
  };
  return {draw({n, p.h, p.d}, 2, 1), draw({n, p.g, p.d}, 2, 2), draw({n, p.g, p.d}, 1, 3),
          draw({n, p.h, p.d}, 1, 4),
          Tensor::from_ints(offsets, {static_cast<int64_t>(offsets.size())}, DType::kI32)};
}

struct Outputs {
  Tensor out, lse, dq, dk, dv;
};

// Copies of the inputs converted to `dtype` on `device`.
inline Inputs on_device(const Inputs& in, Device device, DType dtype) {
  const auto put = [&](const Tensor& t) { return t.to(dtype).to(device).contiguous(); };
  return {put(in.q), put(in.k), put(in.v), put(in.dout), in.cu_seqlens.to(device)};
}

// The forward and backward kernels of the inputs' backend, outputs poisoned with NaN first.
inline Outputs run_kernels(const Inputs& x) {
  const Device device = x.q.device();
  const DType dtype = x.q.dtype();
  const auto poisoned = [&](const Shape& shape, DType type) {
    Tensor t = Tensor::empty(shape, type, device);
    t.fill_(std::nan(""));
    return t;
  };
  const int64_t n = x.q.size(0), h = x.q.size(1);
  const DType stats = dtype == DType::kF64 ? DType::kF64 : DType::kF32;
  Outputs o{poisoned(x.q.shape(), dtype), poisoned({h, n}, stats), poisoned(x.q.shape(), dtype),
            poisoned(x.k.shape(), dtype), poisoned(x.k.shape(), dtype)};
  const double scale = 1.0 / std::sqrt(static_cast<double>(x.q.size(2)));
  Backend& backend = backend_for(device);
  backend.attention(x.q, x.k, x.v, x.cu_seqlens, scale, o.out, o.lse);
  backend.attention_backward(x.q, x.k, x.v, x.cu_seqlens, scale, o.out, o.lse, x.dout, o.dq, o.dk,
                             o.dv);
  return o;
}

inline Outputs run_kernels(const Inputs& in, Device device, DType dtype) {
  return run_kernels(on_device(in, device, dtype));
}

inline Outputs reference(const Inputs& in) { return run_kernels(in, Device::cpu(), DType::kF64); }

// Errors are measured against the tensor's scale, max |want|: each of these tensors has entries of
// order one (rows of one-row sequences copy v, so |out| and |dv| reach ~1), so this is a relative
// bound on the values that matter. A NaN anywhere (an unwritten element) fails both checks.
struct Tolerance {
  double max_error;   // max |got - want| / max |want|
  double norm_error;  // ||got - want||_2 / ||want||_2
};

inline void expect_close(const Tensor& got_t, const Tensor& want_t, Tolerance tol,
                         const std::string& what) {
  const std::vector<double> got = got_t.to_vector(), want = want_t.to_vector();
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_want = 0, max_diff = 0, sq_want = 0, sq_diff = 0;
  size_t worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(got[i] - want[i]);
    max_want = std::max(max_want, std::fabs(want[i]));
    sq_want += want[i] * want[i];
    sq_diff += diff * diff;
    if (!(diff <= max_diff)) {  // NaN-sticky: a NaN difference becomes the worst
      max_diff = diff;
      worst = i;
    }
  }
  if (got.empty()) return;
  EXPECT_LE(max_diff, tol.max_error * max_want)
      << what << ": element " << worst << " gpu " << got[worst] << " vs cpu f64 " << want[worst]
      << " (max |want| " << max_want << ")";
  EXPECT_LE(std::sqrt(sq_diff), tol.norm_error * std::sqrt(sq_want))
      << what << ": relative norm error " << std::sqrt(sq_diff / sq_want);
}

inline void expect_outputs_close(const Outputs& got, const Outputs& want, Tolerance tol) {
  expect_close(got.out, want.out, tol, "out");
  expect_close(got.lse, want.lse, tol, "lse");
  expect_close(got.dq, want.dq, tol, "dq");
  expect_close(got.dk, want.dk, tol, "dk");
  expect_close(got.dv, want.dv, tol, "dv");
}

inline void expect_matches_reference(const Problem& p, Tolerance tol, uint64_t seed) {
  SCOPED_TRACE(describe(p));
  const Inputs in = make_inputs(p, seed);
  expect_outputs_close(run_kernels(in, kGpu, p.dtype), reference(in), tol);
}

// f32 kernels accumulate in f32: a dot product of D <= 256 terms and softmax sums of a few hundred
// terms carry relative errors ~ sqrt(terms) * 2^-24 ~ 1e-6 of the tensor's scale (their worst case,
// terms * 2^-24, is never approached by random data); the output is then rounded once (2^-24).
// 2e-5 leaves an order of magnitude above that, while a wrong key, mask or scale moves elements by
// 1e-2 or more.
inline constexpr Tolerance kF32{2e-5, 2e-5};
// bf16: the inputs are the same rounded values on both sides; each output is rounded to bf16 (2^-9
// relative), and the kernels round P, dS and the saved output to bf16 before multiplying (2^-9
// each, averaging out over the sums). Elementwise that stays below 1e-2 of the scale and in norm
// well below 1e-2; 3e-2 and 1.2e-2 leave margin, and a dropped key of a short sequence or a
// mis-masked tile costs several percent in norm.
inline constexpr Tolerance kBf16{3e-2, 1.2e-2};
// f64 accumulates in f64 like the CPU, in another order: ~1e-15.
inline constexpr Tolerance kF64{1e-12, 1e-12};

// Sequence lengths: empty and one-row sequences, none a multiple of 16 except 64 and 128.
inline const std::vector<int64_t> kMixed = {1, 0, 37, 64, 130, 0, 5, 200};
inline const std::vector<int64_t> kSingle = {300};

// Eight lengths in [0, 150] from a fixed seed, with a one-row and an empty sequence among them.
// `count` sequence lengths drawn from 0 .. max_len (generator seed `seed`), then the `fixed`
// (index, length) pairs set, so that empty, one-row and tile-edge sequences are always among them.
inline std::vector<int64_t> random_lengths(uint32_t seed, int count = 8, int64_t max_len = 150,
                                           std::initializer_list<std::pair<int, int64_t>> fixed = {
                                               {2, 1}, {5, 0}}) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> len(0, max_len);
  std::vector<int64_t> lens(count);
  for (int64_t& l : lens) l = len(rng);
  for (const auto& [i, l] : fixed) lens[i] = l;
  return lens;
}

struct Heads {
  int64_t h, g;
};
inline const Heads kHeadLayouts[] = {{2, 2}, {3, 1}, {6, 2}};

inline bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu()), y = b.to(Device::cpu());
  return x.nbytes() == y.nbytes() && std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

// The fused backward (one kernel per key tile, dq added per query tile in key-tile order through
// f32 sums and counters) against the reference, on the tensor-core cases above plus lengths of up
// to 6 key tiles of 128, so that query tiles collect pieces from several key tiles.
inline const std::vector<int64_t> kLong = {700, 1, 0, 333, 129, 128, 31};

struct LargeCase {
  std::vector<int64_t> lens;
  int64_t h, g, d;
};
inline const LargeCase kLargeCases[] = {{{8192, 8192}, 15, 5, 64},
                                        {{8192, 4000, 1, 77}, 8, 8, 128}};

inline Inputs large_inputs(const LargeCase& c, uint64_t seed) {
  return make_inputs({c.lens, c.h, c.g, c.d, DType::kBF16}, seed);
}

// The bf16 kernels with DTRN_ATTENTION_BACKWARD = `backward`.
inline Outputs run_backward(const char* backward, const Inputs& in) {
  BackwardChoice choice(backward);
  return run_kernels(in, kGpu, DType::kBF16);
}

inline void expect_same_gradients(const Outputs& a, const Outputs& b, const std::string& what) {
  EXPECT_TRUE(same_bits(a.dq, b.dq)) << what;
  EXPECT_TRUE(same_bits(a.dk, b.dk)) << what;
  EXPECT_TRUE(same_bits(a.dv, b.dv)) << what;
}

// The wgmma backward (DTRN_ATTENTION_BACKWARD=wgmma) against the CPU f64 reference: dk/dv blocks of
// 128 keys in two consumer warpgroups of 64 walking query steps of 64, dq blocks of 128 queries
// walking key tiles of 128 (D = 64) or 64 (D = 128), each step's tiles loaded by a producer
// warpgroup. kWgmmaEdges has sequences shorter than, equal to and one past
// a warpgroup's 64 rows (63, 64, 65), one past a block (129), many blocks (700), one row and none;
// with the tensor-core forward's lse and with the wgmma forward's. Tolerances and their reasons:
// kBf16 (the wgmma kernels round P and dS to bf16 before their products, as the mma.sync ones do).
inline const std::vector<int64_t> kWgmmaEdges = {63, 0, 64, 1, 65, 129, 700};
}  // namespace dtrn::attention_fixtures
