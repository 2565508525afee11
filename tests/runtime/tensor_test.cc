// Tensor geometry, views, copies across dtypes, bf16 conversion and host access.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn {
namespace {

using ::testing::HasSubstr;

Tensor iota(const Shape& shape, DType dtype = DType::kF32) {
  std::vector<double> v(shape_numel(shape));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  return Tensor::from_vector(v, shape, dtype);
}

TEST(Tensor, ContiguousStridesAndNumel) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.describe(), "f32[2, 3, 4] on cpu");
}

TEST(Tensor, PinnedTensorsAreHostTensorsThatHoldTheirValues) {
  // Without a GPU the pinned allocator is the CPU's; either way the tensor is an ordinary host tensor.
  Tensor src = Tensor::uniform({5, 3}, -1, 1, 3, 7, 0, DType::kF32);
  Tensor pinned = Tensor::empty_pinned({5, 3}, DType::kF32);
  EXPECT_TRUE(pinned.device().is_cpu());
  EXPECT_TRUE(pinned.is_contiguous());
  pinned.copy_(src);
  EXPECT_EQ(pinned.to_vector(), src.to_vector());
  EXPECT_EQ(Tensor::empty_pinned({0, 4}).numel(), 0);
  EXPECT_THROW(Tensor::empty_pinned({-1}), Error);
}

TEST(Tensor, TransposeIsAViewAndContiguousCopiesInTheRightOrder) {
  Tensor t = iota({2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.raw_data(), t.raw_data());  // a view: same memory
  // Element (i, j) of the transpose is element (j, i) of the original: 0 3 1 4 2 5.
  EXPECT_EQ(tt.contiguous().to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, NarrowSharesStorageWithTheRightOffset) {
  Tensor t = iota({4, 3});
  Tensor rows = t.narrow(0, 1, 2);
  EXPECT_TRUE(rows.is_contiguous());
  EXPECT_EQ(rows.to_vector(), (std::vector<double>{3, 4, 5, 6, 7, 8}));
  Tensor cols = t.narrow(1, 2, 1);
  EXPECT_EQ(cols.to_vector(), (std::vector<double>{2, 5, 8, 11}));
  rows.fill_(-1);  // writes through the view
  EXPECT_EQ(t.to_vector()[3], -1);
  EXPECT_EQ(t.to_vector()[9], 9);
}

TEST(Tensor, ReshapeInfersOneDimensionAndRejectsWrongCounts) {
  Tensor t = iota({2, 6});
  EXPECT_EQ(t.reshape({3, -1}).shape(), (Shape{3, 4}));
  try {
    t.reshape({5, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("f32[2, 6]"));
    EXPECT_THAT(e.what(), HasSubstr("[5, 2]"));
  }
  // Reshaping a non-contiguous view copies in logical order.
  EXPECT_EQ(t.transpose(0, 1).reshape({12}).to_vector()[1], 6);
}

TEST(Tensor, ConversionsBetweenDtypesRoundTrip) {
  Tensor ints = Tensor::from_ints({-3, 0, 7, 1LL << 40}, {4});
  EXPECT_EQ(ints.to(DType::kF64).to(DType::kI64).to_ints(), (std::vector<int64_t>{-3, 0, 7, 1LL << 40}));
  EXPECT_EQ(ints.narrow(0, 0, 3).to(DType::kI32).to_ints(), (std::vector<int64_t>{-3, 0, 7}));
  Tensor x = Tensor::from_vector({1.5, -2.25, 3.0}, {3}, DType::kF64);
  EXPECT_EQ(x.to(DType::kF32).to(DType::kBF16).to(DType::kF64).to_vector(), x.to_vector());
}

TEST(Tensor, CopyIntoAStridedViewWritesOnlyThatView) {
  Tensor t = Tensor::zeros({3, 4});
  t.transpose(0, 1).narrow(0, 1, 1).copy_(Tensor::from_vector({7, 8, 9}, {1, 3}));
  EXPECT_EQ(t.to_vector(), (std::vector<double>{0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0}));
}

TEST(Tensor, DataOfTheWrongTypeIsAClearError) {
  Tensor t = Tensor::zeros({2});
  EXPECT_THROW(t.data<double>(), Error);
  EXPECT_THROW(Tensor::zeros({-1}), Error);
  EXPECT_THROW(Tensor().shape(), Error);
}

// ---- bf16: round to nearest even, against an independent bit-level reference.

// Reference: exact rounding of the float's value to the nearest bf16, ties to even, done with doubles.
uint16_t reference_bf16(float f) {
  if (std::isnan(f)) return 0x7fc0;
  if (std::isinf(f)) return f > 0 ? 0x7f80 : 0xff80;
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t down = static_cast<uint16_t>(u >> 16);
  const uint16_t up = static_cast<uint16_t>(down + 1);
  const double vd = static_cast<float>(BFloat16::FromBits(down));
  const double vu = static_cast<float>(BFloat16::FromBits(up));
  const double dd = std::abs(static_cast<double>(f) - vd);
  // Past the largest finite bf16 the upper neighbour is Inf; values that IEEE rounds there are handled
  // by the caller, so here it never wins.
  const double du = std::isinf(vu) ? std::numeric_limits<double>::infinity() : std::abs(vu - f);
  if (dd < du) return down;
  if (du < dd) return up;
  return (down & 1) ? up : down;
}

TEST(BFloat16, RoundsToNearestEvenLikeAnExactReference) {
  // Exact values, halfway cases both ways, and a sweep of random bit patterns.
  EXPECT_EQ(BFloat16(1.0f).bits, 0x3f80);
  EXPECT_EQ(BFloat16(std::bit_cast<float>(0x3f808000u)).bits, 0x3f80);  // tie, even stays
  EXPECT_EQ(BFloat16(std::bit_cast<float>(0x3f818000u)).bits, 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(BFloat16(std::bit_cast<float>(0x3f808001u)).bits, 0x3f81);  // just above the tie
  uint32_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float f = std::bit_cast<float>(state);
    if (std::isnan(f)) continue;
    const uint16_t got = BFloat16(f).bits;
    // The largest finite floats round up to infinity exactly as IEEE rounding does.
    if ((got & 0x7fff) == 0x7f80 && !std::isinf(f)) {
      EXPECT_GE(std::abs(f), 3.3961775e38f);
      continue;
    }
    ASSERT_EQ(got, reference_bf16(f)) << std::hex << state;
  }
}

TEST(BFloat16, KeepsNanInfAndSignedZero) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(BFloat16(inf).bits, 0x7f80);
  EXPECT_EQ(BFloat16(-inf).bits, 0xff80);
  EXPECT_EQ(BFloat16(-0.0f).bits, 0x8000);
  // A NaN whose payload lives only in the low bits must stay NaN, not become Inf.
  const float low_nan = std::bit_cast<float>(0x7f800001u);
  EXPECT_TRUE(std::isnan(static_cast<float>(BFloat16(low_nan))));
  EXPECT_TRUE(std::isnan(static_cast<float>(BFloat16(-std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(BFloat16(-std::numeric_limits<float>::quiet_NaN()).bits & 0x8000, 0x8000);
  // Round trip of every bf16 value through float is exact.
  for (uint32_t b = 0; b < 65536; ++b) {
    const BFloat16 x = BFloat16::FromBits(static_cast<uint16_t>(b));
    const float f = static_cast<float>(x);
    if (std::isnan(f)) continue;
    ASSERT_EQ(BFloat16(f).bits, b);
  }
}

TEST(BFloat16, TensorConversionMatchesScalarConversion) {
  std::vector<double> v = {1.00390625, -3.14159, 65504.0, 1e-40, 0.0};
  Tensor t = Tensor::from_vector(v, {5}, DType::kBF16);
  const BFloat16* p = t.data<BFloat16>();
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(p[i].bits, BFloat16(static_cast<float>(v[i])).bits);
}

}  // namespace
}  // namespace dtrn
