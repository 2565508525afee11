// SHA-256 against the FIPS 180-4 example digests (NIST CSRC "SHA256.pdf" and the one-million-'a'
// message), and incremental updates in every split against the one-shot digest; both compression paths
// (portable and the x86 SHA extensions, where the CPU has them) on the examples and on random data.
#include "dtrn/runtime/sha256.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace dtrn {
namespace {

std::string digest(std::string_view data, bool accelerated) {
  Sha256 h(accelerated);
  h.update(data);
  return h.hex_digest();
}

void expect_fips_examples(bool accelerated) {
  SCOPED_TRACE(accelerated ? "SHA extensions" : "portable");
  EXPECT_EQ(digest("", accelerated), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(digest("abc", accelerated), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the length no longer fits the first block, so padding spills into a second.
  EXPECT_EQ(digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", accelerated),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(digest(std::string(1'000'000, 'a'), accelerated),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, MatchesFipsExamples) {
  expect_fips_examples(false);
  expect_fips_examples(true);  // the portable path again where the CPU lacks the extensions
}

// The SHA extensions against the portable code on random bytes of every length up to a few blocks and
// a few long ones, whole and fed in random pieces.
TEST(Sha256, ShaExtensionsMatchPortableCode) {
  if (!Sha256::accelerated_available()) GTEST_SKIP() << "this CPU has no x86 SHA extensions";
  std::mt19937_64 rng(7);
  std::string data(70'001, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 260; ++n) lengths.push_back(n);
  for (size_t n : {4096, 65'537, 70'001}) lengths.push_back(n);
  for (size_t n : lengths) {
    const std::string_view piece(data.data(), n);
    const std::string want = digest(piece, false);
    ASSERT_EQ(digest(piece, true), want) << n << " bytes";
    Sha256 h(true);
    for (size_t at = 0; at < n;) {
      const size_t take = std::min<size_t>(n - at, rng() % 300);
      h.update(piece.substr(at, take));
      at += take;
    }
    ASSERT_EQ(h.hex_digest(), want) << n << " bytes in pieces";
  }
}

TEST(Sha256, IncrementalUpdatesMatchOneShot) {
  std::string data(300, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  const std::string want = sha256_hex(data);
  // Two pieces split at every offset, so every buffer fill level meets every block boundary.
  for (size_t cut = 0; cut <= data.size(); ++cut) {
    Sha256 h;
    h.update(data.data(), cut);
    h.update(std::string_view(data).substr(cut));
    ASSERT_EQ(h.hex_digest(), want) << "split at " << cut;
  }
}

}  // namespace
}  // namespace dtrn
