// The CUDA multi-tensor AdamW kernel (adamw_multi, cuda/optimizer.cu) called directly against the
// CPU backend's, bit for bit: both evaluate cpu/adamw.cc's double expression from the same f32
// values with every operation rounded on its own and round each stored value once, and both are
// handed the same norm, so the clipping scale is the same double. Slots of sizes around the
// kernel's 4-element accesses and its 65536-element chunks, placed at element offsets 0 to 3 of
// their buffers (a head of single elements before the first 16-byte boundary) or misaligned unlike
// each other (the whole chunk one element at a time); sentinels on both sides of every view catch a
// write outside it. The gradient norm's kernel reads the same placed gradients. Skips without a
// GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../../runtime/src/backend.h"
#include "gpu_compare.h"

namespace dtrn {
namespace {

using gpu_testing::bits_of;
using gpu_testing::kGpu;

constexpr double kSentinel = 7.0;
// Sentinel elements before a view (plus its offset) and after it: 16 bytes of f32 or of bf16, so
// that the view's offset alone decides its alignment.
constexpr int64_t kLead = 4, kTrail = 5;

// A GPU buffer holding `values` at element `offset` past 16-byte-aligned sentinels, and that view.
struct Placed {
  Tensor buffer, view;
  int64_t begin = 0;
};

Placed place(const Tensor& values, int64_t offset) {
  const DType dtype = values.dtype();
  const int64_t lead = kLead * (dtype == DType::kBF16 ? 2 : 1) + offset;
  Placed p;
  p.begin = lead;
  p.buffer = concat({Tensor::full({lead}, kSentinel, dtype), values,
                     Tensor::full({kTrail}, kSentinel, dtype)},
                    0)
                 .to(kGpu);
  p.view = p.buffer.narrow(0, lead, values.numel());
  return p;
}

void expect_sentinels_kept(const Placed& p, const std::string& what) {
  const std::vector<double> all = p.buffer.to_vector();
  const int64_t end = p.begin + p.view.numel();
  for (int64_t i = 0; i < static_cast<int64_t>(all.size()); ++i) {
    if (i >= p.begin && i < end) continue;
    ASSERT_EQ(all[i], kSentinel) << what << ": element " << i
                                 << " of the buffer, outside the view, was written";
  }
}

// sum_squares_multi (the gradient norm's kernel, same chunks and alignment split) over the placed
// gradients against the sum in double of the CPU's copies. Squares of f32 values are exact in
// double and both sides add them in double, in different orders: n positive terms, so each side's n
// additions round by at most 2^-53 of the total each.
void expect_gradient_norm_matches(const std::vector<Placed>& grads,
                                  const std::vector<AdamWTensors>& cpu) {
  std::vector<Tensor> views;
  double want = 0;
  int64_t n = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    views.push_back(grads[i].view);
    for (double g : cpu[i].grad.to_vector()) want += g * g;
    n += grads[i].view.numel();
  }
  const Tensor got = Tensor::zeros({1}, DType::kF64, kGpu);
  backend_for(kGpu).sum_squares_multi(views, got);
  EXPECT_NEAR(got.item(), want, 2 * static_cast<double>(n) * std::ldexp(1.0, -53) * want);
}

// One slot: its size and the element offsets of param, grad, m, v and the compute copy (-1: none).
struct SlotCase {
  int64_t n;
  int param, grad, m, v, compute;
};

struct Slot {
  SlotCase c;
  Tensor param, m, v, compute;  // the CPU's
  Placed gparam, gm, gv, gcompute;
};

TEST(CudaAdamW, MultiTensorUpdateIsBitIdenticalToTheCpuAtAnyAlignment) {
  REQUIRE_GPU();
  const std::vector<SlotCase> cases = {
      {1, 0, 0, 0, 0, 0},     {3, 1, 1, 1, 1, 1},         {4, 0, 0, 0, 0, 0},
      {5, 2, 2, 2, 2, 2},     {33, 3, 3, 3, 3, 3},        {4097, 1, 1, 1, 1, -1},
      {70001, 0, 0, 0, 0, 0}, {65536 + 7, 2, 2, 2, 2, 2}, {1000, 1, 0, 1, 1, 1},
      {1001, 0, 0, 0, 0, 1},  {999, 3, 3, 3, 2, -1},
  };
  std::vector<Slot> slots;
  for (size_t i = 0; i < cases.size(); ++i) {
    const SlotCase& c = cases[i];
    Slot s;
    s.c = c;
    s.param = Tensor::uniform({c.n}, -1, 1, 10 + i, 1, 0, DType::kF32);
    s.m = Tensor::uniform({c.n}, -0.1, 0.1, 10 + i, 2, 0, DType::kF32);
    s.v = Tensor::uniform({c.n}, 0, 0.01, 10 + i, 3, 0, DType::kF32);
    s.gparam = place(s.param, c.param);
    s.gm = place(s.m, c.m);
    s.gv = place(s.v, c.v);
    if (c.compute >= 0) {
      s.compute = s.param.to(DType::kBF16);
      s.gcompute = place(s.compute, c.compute);
    }
    slots.push_back(s);
  }
  // Clipping off, active (scale 1 / sqrt(1234.5)) and inactive (norm 2 under 100); then steps whose
  // bias corrections 1 - beta^t are exactly 1 in double, the first (t 400) or both (t 1000), which
  // the kernel no longer divides by.
  const int steps[] = {1, 2, 3, 400, 1000};
  const double max_norms[] = {0.0, 1.0, 100.0, 1.0, 0.0}, norms_sq[] = {9.0, 1234.5, 4.0, 2.0, 9.0};
  for (int step = 0; step < 5; ++step) {
    const int t = steps[step];
    const AdamWArgs args{0.01, 0.9, 0.95, 1e-8, 0.0, 1 - std::pow(0.9, t), 1 - std::pow(0.95, t)};
    ASSERT_EQ(args.bias_correction1 == 1.0, t >= 400) << "step " << t;
    ASSERT_EQ(args.bias_correction2 == 1.0, t >= 1000) << "step " << t;
    std::vector<AdamWTensors> cpu, gpu;
    std::vector<Placed> grads;
    for (size_t i = 0; i < slots.size(); ++i) {
      Slot& s = slots[i];
      const Tensor g = Tensor::uniform({s.c.n}, -1, 1, 100 * step + i, 4, 0, DType::kF32);
      grads.push_back(place(g, s.c.grad));
      const double wd = i % 2 == 0 ? 0.1 : 0.0;
      cpu.push_back({s.param, g, s.m, s.v, s.compute, wd});
      gpu.push_back({s.gparam.view, grads.back().view, s.gm.view, s.gv.view,
                     s.c.compute >= 0 ? s.gcompute.view : Tensor(), wd});
    }
    expect_gradient_norm_matches(grads, cpu);
    const Tensor norm_sq = Tensor::full({1}, norms_sq[step], DType::kF64);
    backend_for(Device::cpu()).adamw_multi(cpu, args, norm_sq, max_norms[step]);
    backend_for(kGpu).adamw_multi(gpu, args, norm_sq.to(kGpu), max_norms[step]);
    for (const Slot& s : slots) {
      const std::string what = "step " + std::to_string(step) + ", slot of " +
                               std::to_string(s.c.n) + " at offset " + std::to_string(s.c.param);
      EXPECT_EQ(bits_of(s.gparam.view), bits_of(s.param)) << what << ": param";
      EXPECT_EQ(bits_of(s.gm.view), bits_of(s.m)) << what << ": m";
      EXPECT_EQ(bits_of(s.gv.view), bits_of(s.v)) << what << ": v";
      for (const Placed* p : {&s.gparam, &s.gm, &s.gv}) expect_sentinels_kept(*p, what);
      if (s.c.compute >= 0) {
        EXPECT_EQ(bits_of(s.gcompute.view), bits_of(s.compute)) << what << ": compute copy";
        expect_sentinels_kept(s.gcompute, what + " compute copy");
      }
    }
  }
}

}  // namespace
}  // namespace dtrn
