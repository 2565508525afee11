// The activation backwards that also write the activation (backend.h: silu_backward, swiglu_backward
// with an out tensor) and the linear layers over an activation whose backward uses them (ops.h:
// silu_linear, swiglu_linear), on the CPU. The references are the plain ops: silu / swiglu for the
// activation, their own backward for the gradients, and linear(swiglu(gate, up), W) for the layers.
// Both sides evaluate the same expressions in the same order on the same values, so every comparison
// is exact, bit for bit: that is the contract that keeps CPU training reproducible to the bit whichever
// path a model takes. (Finite-difference checks of the same ops: core_ops_test.cc.)
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../../runtime/src/backend.h"
#include "gpu_compare.h"

namespace dtrn {
namespace {

using gpu_testing::bits_of;
using gpu_testing::random_cpu;

const Shape kOddShapes[] = {{1}, {7}, {3, 11}, {17, 33}, {4099}};

Tensor nan_filled(const Shape& shape, DType dtype) {
  return Tensor::full(shape, std::numeric_limits<double>::quiet_NaN(), dtype);
}

// The gradients autograd gives `inputs` (fresh leaves with their values) for upstream gradient `g`
// through f.
std::vector<Tensor> gradients_of(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                 const std::vector<Tensor>& inputs, const Tensor& g) {
  std::vector<Tensor> leaves;
  for (const Tensor& x : inputs) leaves.push_back(gpu_testing::leaf(x));
  f(leaves).backward(g);
  std::vector<Tensor> grads;
  for (const Tensor& x : leaves) grads.push_back(x.grad());
  return grads;
}

TEST(ActivationBackward, SwigluAlsoWritesTheForwardsActivationBitForBit) {
  Backend& cpu = backend_for(Device::cpu());
  for (DType dtype : {DType::kF32, DType::kF64}) {
    for (const Shape& shape : kOddShapes) {
      const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(shape);
      // Gates over [-6, 6) reach the sigmoid's flat ends; up and the upstream gradient in [-1, 1).
      Tensor gate = random_cpu(shape, 1, dtype, -6.0, 6.0), up = random_cpu(shape, 2, dtype);
      Tensor g = random_cpu(shape, 3, dtype);
      Tensor dgate = nan_filled(shape, dtype), dup = nan_filled(shape, dtype);
      Tensor a = nan_filled(shape, dtype);
      cpu.swiglu_backward(gate, up, g, dgate, dup, a);
      const std::vector<Tensor> want =
          gradients_of([](const std::vector<Tensor>& t) { return swiglu(t[0], t[1]); }, {gate, up}, g);
      EXPECT_EQ(bits_of(a), bits_of(swiglu(gate, up))) << what << " activation";
      EXPECT_EQ(bits_of(dgate), bits_of(want[0])) << what << " dgate";
      EXPECT_EQ(bits_of(dup), bits_of(want[1])) << what << " dup";
    }
  }
}

TEST(ActivationBackward, SiluAlsoWritesTheForwardsActivationBitForBit) {
  Backend& cpu = backend_for(Device::cpu());
  for (DType dtype : {DType::kF32, DType::kF64}) {
    for (const Shape& shape : kOddShapes) {
      const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(shape);
      Tensor x = random_cpu(shape, 4, dtype, -6.0, 6.0), g = random_cpu(shape, 5, dtype);
      Tensor dx = nan_filled(shape, dtype), a = nan_filled(shape, dtype);
      cpu.silu_backward(x, g, dx, a);
      const std::vector<Tensor> want =
          gradients_of([](const std::vector<Tensor>& t) { return silu(t[0]); }, {x}, g);
      EXPECT_EQ(bits_of(a), bits_of(silu(x))) << what << " activation";
      EXPECT_EQ(bits_of(dx), bits_of(want[0])) << what << " dx";
    }
  }
}

// The layer's output and the gradients of its inputs that require one (trainable[i]), for a fixed
// upstream gradient. Every input is a fresh leaf with the given values.
std::vector<Tensor> output_and_gradients(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                         const std::vector<Tensor>& values,
                                         const std::vector<bool>& trainable) {
  std::vector<Tensor> leaves;
  for (size_t i = 0; i < values.size(); ++i) {
    Tensor t = values[i].detach().clone();
    t.set_requires_grad(trainable[i]);
    leaves.push_back(t);
  }
  Tensor y = f(leaves);
  y.backward(random_cpu(y.shape(), 6, y.dtype()));
  std::vector<Tensor> out{y};
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (trainable[i]) out.push_back(leaves[i].grad());
  }
  return out;
}

std::string flags(const std::vector<bool>& trainable) {
  std::string s;
  for (bool t : trainable) s += t ? '1' : '0';
  return s;
}

void expect_same_bits(const std::vector<Tensor>& got, const std::vector<Tensor>& want,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].defined() && want[i].defined()) << what << " output/gradient " << i;
    EXPECT_EQ(bits_of(got[i]), bits_of(want[i])) << what << " output/gradient " << i;
  }
}

// Which inputs train: all (the fused pass writes the activation for the weight's gradient), only the
// activation's inputs (no activation needed), only the weight (the plain recompute), one of two.
const std::vector<std::vector<bool>> kSwigluTrainable = {
    {true, true, true}, {true, true, false}, {false, false, true}, {true, false, true}};

TEST(ActivationLinear, SwigluLinearGradientsEqualTheComposedOpsBitForBit) {
  const auto fused = [](const std::vector<Tensor>& t) { return swiglu_linear(t[0], t[1], t[2]); };
  const auto composed = [](const std::vector<Tensor>& t) { return linear(swiglu(t[0], t[1]), t[2]); };
  for (DType dtype : {DType::kF32, DType::kF64}) {
    // 3-D [2, 9, 33] rows (the batched path) and 2-D [37, 48] rows, into 24 and 5 outputs.
    for (const auto& [rows, out] : {std::pair<Shape, int64_t>{{2, 9, 33}, 24}, {{37, 48}, 5}}) {
      const Tensor gate = random_cpu(rows, 10, dtype, -6.0, 6.0), up = random_cpu(rows, 11, dtype);
      const Tensor w = random_cpu({out, rows.back()}, 12, dtype);
      for (const std::vector<bool>& trainable : kSwigluTrainable) {
        const std::string what = std::string(dtype_name(dtype)) + " " + shape_str(rows) +
                                 " trainable " + flags(trainable);
        expect_same_bits(output_and_gradients(fused, {gate, up, w}, trainable),
                         output_and_gradients(composed, {gate, up, w}, trainable), what);
      }
    }
  }
}

TEST(ActivationLinear, SiluLinearGradientsEqualTheComposedOpsBitForBit) {
  const auto fused = [](const std::vector<Tensor>& t) { return silu_linear(t[0], t[1], t[2]); };
  const auto composed = [](const std::vector<Tensor>& t) { return linear(silu(t[0]), t[1], t[2]); };
  const auto fused_no_bias = [](const std::vector<Tensor>& t) { return silu_linear(t[0], t[1]); };
  const auto composed_no_bias = [](const std::vector<Tensor>& t) { return linear(silu(t[0]), t[1]); };
  const Tensor x = random_cpu({2, 9, 33}, 20, DType::kF32, -6.0, 6.0);
  const Tensor w = random_cpu({24, 33}, 21), b = random_cpu({24}, 22);
  for (const std::vector<bool>& trainable :
       std::vector<std::vector<bool>>{{true, true, true}, {true, false, false}, {false, true, true},
                                      {false, false, true}}) {
    const std::string what = "trainable " + flags(trainable);
    expect_same_bits(output_and_gradients(fused, {x, w, b}, trainable),
                     output_and_gradients(composed, {x, w, b}, trainable), what);
    if (trainable[0] || trainable[1]) {
      const std::vector<bool> two{trainable[0], trainable[1]};
      expect_same_bits(output_and_gradients(fused_no_bias, {x, w}, two),
                       output_and_gradients(composed_no_bias, {x, w}, two), what + " without bias");
    }
  }
}

}  // namespace
}  // namespace dtrn
