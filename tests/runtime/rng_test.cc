// The counter-based RNG: Philox-4x32-10 known-answer vectors, purity in (seed, stream, offset), agreement
// across processes, and the statistics of the derived draws.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <vector>

#include "dtrn/runtime/rng.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn {
namespace {

// Known-answer vectors of the Random123 reference (kat_vectors, philox4x32 with 10 rounds). Words map
// as counter = (c1 << 32 | c0), stream = (c3 << 32 | c2), seed = (k1 << 32 | k0).
TEST(Philox, MatchesRandom123KnownAnswers) {
  using A = std::array<uint32_t, 4>;
  EXPECT_EQ(philox_block(0, 0, 0), (A{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox_block(~0ull, ~0ull, ~0ull), (A{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox_block(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull),
            (A{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Philox, DrawsArePureFunctionsOfSeedStreamOffset) {
  RngStream a(42, 3), b(42, 3, 1000);
  std::vector<uint32_t> first;
  for (int i = 0; i < 1010; ++i) first.push_back(a.next_u32());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(b.next_u32(), first[1000 + i]);
  // Different streams and seeds differ.
  int same_stream = 0, same_seed = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same_stream += philox_u32(42, 3, i) == philox_u32(42, 4, i);
    same_seed += philox_u32(42, 3, i) == philox_u32(43, 3, i);
  }
  EXPECT_LE(same_stream, 2);
  EXPECT_LE(same_seed, 2);
}

TEST(Philox, SameNumbersInAnotherProcess) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    Tensor t = Tensor::normal({257}, 0.0, 1.0, 7, 11, 5, DType::kF64);
    std::vector<double> v = t.to_vector();
    const ssize_t want = static_cast<ssize_t>(v.size() * sizeof(double));
    _exit(write(fds[1], v.data(), want) == want ? 0 : 1);
  }
  close(fds[1]);
  std::vector<double> child(257);
  size_t got = 0;
  while (got < child.size() * sizeof(double)) {
    ssize_t r = read(fds[0], reinterpret_cast<char*>(child.data()) + got, child.size() * 8 - got);
    ASSERT_GT(r, 0);
    got += static_cast<size_t>(r);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(child, Tensor::normal({257}, 0.0, 1.0, 7, 11, 5, DType::kF64).to_vector());
}

TEST(Philox, TensorElementIIsDrawOffsetPlusI) {
  Tensor whole = Tensor::uniform({100}, 0, 1, 9, 2, 0, DType::kF64);
  Tensor tail = Tensor::uniform({50}, 0, 1, 9, 2, 50, DType::kF64);
  std::vector<double> w = whole.to_vector(), t = tail.to_vector();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(w[50 + i], t[i]);
}

TEST(Philox, UniformAndNormalHaveTheRightMoments) {
  // 200k draws: the standard error of the mean is 1/sqrt(12 * 2e5) ~ 6.5e-4 for the uniform and
  // 2.2e-3 for the normal, so 5 sigma bounds fail only for a broken generator.
  const int n = 200000;
  std::vector<double> u = Tensor::uniform({n}, 0, 1, 1, 1, 0, DType::kF64).to_vector();
  std::vector<double> z = Tensor::normal({n}, 0, 1, 1, 2, 0, DType::kF64).to_vector();
  double su = 0, sz = 0, sz2 = 0;
  for (int i = 0; i < n; ++i) {
    ASSERT_GE(u[i], 0.0);
    ASSERT_LT(u[i], 1.0);
    su += u[i];
    sz += z[i];
    sz2 += z[i] * z[i];
  }
  EXPECT_NEAR(su / n, 0.5, 5 * 6.5e-4);
  EXPECT_NEAR(sz / n, 0.0, 5 * 2.3e-3);
  EXPECT_NEAR(sz2 / n, 1.0, 5 * 3.2e-3);  // var of z^2 is 2: se = sqrt(2 / n)
}

TEST(Philox, NextBelowStaysInRangeAndCoversIt) {
  RngStream r(5, 0);
  std::vector<int> hits(7, 0);
  for (int i = 0; i < 7000; ++i) {
    const uint64_t x = r.next_below(7);
    ASSERT_LT(x, 7u);
    ++hits[x];
  }
  for (int h : hits) EXPECT_GT(h, 800);  // expected 1000 each
}

}  // namespace
}  // namespace dtrn
