// SHA-256 against the FIPS 180-4 example digests (NIST CSRC "SHA256.pdf" and the one-million-'a'
// message), and incremental updates in every split against the one-shot digest.
#include "dtrn/runtime/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace dtrn {
namespace {

TEST(Sha256, MatchesFipsExamples) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the length no longer fits the first block, so padding spills into a second.
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1'000'000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
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
