// The sampler and loader: global batches independent of the data-parallel degree, exact
// continuation from a saved state (also with another degree), epochs as permutations that are pure
// functions of (seed, epoch), window contents against the shard bytes, and one clear error for each
// corrupt input.
#include "dtrn/data/loader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dtrn/data/prep.h"
#include "dtrn/data/sampler.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/runtime/sha256.h"
#include "test_util.h"

namespace dtrn::data {
namespace {

namespace fs = std::filesystem;
using testing::assets_tokenizer;
using testing::kAssets;

// Three books in shards of 50k tokens: 7 train shards of uneven sizes, so windows come from
// several.
class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("dtrn_loader_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    PrepOptions o;
    const std::string g = kAssets + "/corpus/gutenberg/";
    o.inputs = {g + "carroll-alice.txt", g + "chesterton-ball.txt", g + "blake-poems.txt",
                g + "austen-persuasion.txt"};
    o.val_patterns = {"carroll-alice"};
    o.out_dir = (*dir_ / "data").string();
    o.shard_tokens = 50'000;
    auto meta = prepare_dataset(assets_tokenizer(), o);
    if (!meta.ok()) throw std::runtime_error(meta.status().message());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static std::string data_dir() { return (*dir_ / "data").string(); }

  static std::shared_ptr<const TokenDataset> train() {
    auto d = TokenDataset::Open(data_dir(), "train", {assets_tokenizer().identity(), true});
    if (!d.ok()) throw std::runtime_error(d.status().message());
    return *d;
  }

  static std::unique_ptr<DataLoader> loader(int dp_rank, int dp_size, SamplerState start = {},
                                            int64_t micro_batch = 2, int64_t seq_len = 512) {
    LoaderOptions o;
    o.seq_len = seq_len;
    o.micro_batch = micro_batch;
    o.global_batch = 8;
    o.dp_rank = dp_rank;
    o.dp_size = dp_size;
    o.seed = 42;
    auto l = DataLoader::Open(train(), o, start);
    if (!l.ok()) throw std::runtime_error(l.status().message());
    return std::move(l).value();
  }

  // The windows of `steps` global batches: each rank's micro batches, ranks in order.
  static std::vector<std::vector<uint64_t>> global_batches(int dp_size, int steps,
                                                           SamplerState start = {},
                                                           SamplerState* end = nullptr) {
    std::vector<std::unique_ptr<DataLoader>> ranks;
    for (int r = 0; r < dp_size; ++r) ranks.push_back(loader(r, dp_size, start));
    std::vector<std::vector<uint64_t>> out;
    for (int step = 0; step < steps; ++step) {
      std::vector<uint64_t> batch;
      for (auto& l : ranks) {
        for (int64_t m = 0; m < l->micro_batches_per_step(); ++m) {
          Batch b = l->next();
          batch.insert(batch.end(), b.windows.begin(), b.windows.end());
        }
      }
      out.push_back(batch);
    }
    if (end != nullptr) *end = ranks[0]->state();
    for (auto& l : ranks) EXPECT_EQ(l->state(), ranks[0]->state());
    return out;
  }

  static fs::path* dir_;
};

fs::path* LoaderTest::dir_ = nullptr;

TEST_F(LoaderTest, SameGlobalBatchesForDp1Dp2Dp4) {
  const int steps = 300;  // several epochs: crosses epoch ends inside a step
  auto dp1 = global_batches(1, steps);
  EXPECT_EQ(dp1, global_batches(2, steps));
  EXPECT_EQ(dp1, global_batches(4, steps));
  EXPECT_GT(uint64_t(steps) * 8, 2 * loader(0, 1)->samples_per_epoch());
}

// Saved mid-epoch 0 and mid-epoch 1, restored with the same and with other data-parallel degrees.
TEST_F(LoaderTest, RestoringStateContinuesExactly) {
  const int steps = 200;
  const uint64_t n = loader(0, 1)->samples_per_epoch();
  auto whole = global_batches(2, steps);
  for (int split : {17, 150}) {
    SamplerState mid;
    auto first = global_batches(2, split, {}, &mid);
    EXPECT_EQ(mid, (SamplerState{split * 8 / n, split * 8 % n}));
    for (int dp : {1, 2, 4}) {
      auto rest = global_batches(dp, steps - split, mid);
      std::vector<std::vector<uint64_t>> joined = first;
      joined.insert(joined.end(), rest.begin(), rest.end());
      EXPECT_EQ(joined, whole) << "saved after step " << split << ", restored with dp " << dp;
    }
  }
  EXPECT_GT(150u * 8, n);  // the second save point is in epoch 1
}

TEST_F(LoaderTest, EpochsArePermutationsFromSeedAndEpoch) {
  const uint64_t n = loader(0, 1)->samples_per_epoch();
  Sampler a(n, 42), b(n, 42), c(n, 43);
  std::vector<uint64_t> e0, e1, e0_again, other_seed;
  for (uint64_t i = 0; i < n; ++i) e1.push_back(a.window(1, i));
  for (uint64_t i = 0; i < n; ++i) e0.push_back(a.window(0, i));
  for (uint64_t i = 0; i < n; ++i) e0_again.push_back(b.window(0, i));  // fresh sampler, no history
  for (uint64_t i = 0; i < n; ++i) other_seed.push_back(c.window(0, i));
  EXPECT_EQ(e0, e0_again);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, other_seed);
  for (auto order : {e0, e1}) {
    std::sort(order.begin(), order.end());
    for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(order[i], i);
  }
  Sampler in_order(n, 42, false);
  EXPECT_EQ(in_order.window(3, 5), 5u);
  EXPECT_EQ(a.advance({0, n - 1}, 2), (SamplerState{1, 1}));
}

// Window w of shard s covers tokens [j*T, j*T + T] with j its index in the shard; targets are
// inputs shifted by one.
TEST_F(LoaderTest, WindowsHoldTheShardTokens) {
  auto data = train();
  const int64_t T = 512;
  auto l = loader(0, 1);
  std::vector<uint64_t> starts{0};
  for (const ShardFile& s : data->shards())
    starts.push_back(starts.back() + (s.num_tokens() - 1) / T);
  EXPECT_EQ(l->samples_per_epoch(), starts.back());
  for (int i = 0; i < 50; ++i) {
    Batch b = l->next();
    ASSERT_EQ(b.inputs.size(), size_t(b.B * b.T));
    for (int64_t r = 0; r < b.B; ++r) {
      const uint64_t w = b.windows[size_t(r)];
      size_t s = 0;
      while (starts[s + 1] <= w) ++s;
      const uint16_t* tok = data->shards()[s].tokens() + (w - starts[s]) * T;
      for (int64_t t = 0; t < T; ++t) {
        ASSERT_EQ(b.inputs[size_t(r * T + t)], tok[t]);
        ASSERT_EQ(b.targets[size_t(r * T + t)], tok[t + 1]);
      }
    }
  }
}

TEST_F(LoaderTest, BadOptionsAreRejected) {
  LoaderOptions o;
  o.seq_len = 64;
  o.micro_batch = 3;
  o.global_batch = 8;
  auto r = DataLoader::Open(train(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("global_batch 8 is not a multiple of micro_batch 3 x dp 1"),
            std::string::npos);
  o.micro_batch = 2;
  o.seq_len = 60'000;
  r = DataLoader::Open(train(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("seq_len 60000 is longer than every shard"),
            std::string::npos)
      << r.status().message();
  o.seq_len = 64;
  r = DataLoader::Open(train(), o, {0, 1'000'000});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("sampler state at sample 1000000"), std::string::npos);
}

// Each corruption of a copy of the dataset gives one line naming the file and the problem.
class CorruptDataset : public LoaderTest {
 protected:
  void SetUp() override {
    copy_ = *dir_ / ("copy_" +
                     std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(copy_);
    fs::copy(data_dir(), copy_);
  }
  void TearDown() override { fs::remove_all(copy_); }

  void patch(const std::string& file, size_t offset, const std::string& bytes) {
    std::fstream f(copy_ / file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(offset));
    f.write(bytes.data(), std::streamsize(bytes.size()));
  }

  void expect_error(const std::string& part, const std::string& expected_identity = "") {
    auto r = TokenDataset::Open(copy_.string(), "train", {expected_identity, true});
    ASSERT_FALSE(r.ok()) << "expected: " << part;
    EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status().message();
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  }

  fs::path copy_;
};

TEST_F(CorruptDataset, Truncated) {
  fs::resize_file(copy_ / "train_000001.bin", fs::file_size(copy_ / "train_000001.bin") - 1);
  expect_error("train_000001.bin: size 100127 bytes does not match the header's 50000 tokens");
}

TEST_F(CorruptDataset, TruncatedInsideHeader) {
  fs::resize_file(copy_ / "train_000000.bin", 10);
  expect_error("train_000000.bin: truncated shard: 10 bytes");
}

TEST_F(CorruptDataset, BadMagic) {
  patch("train_000002.bin", 0, "NOTASHRD");
  expect_error("train_000002.bin: not a dtrn token shard (bad magic)");
}

TEST_F(CorruptDataset, FutureVersion) {
  patch("train_000000.bin", 8, std::string("\x07\0\0\0", 4));
  expect_error("train_000000.bin: shard format version 7, this build reads version 1");
}

TEST_F(CorruptDataset, FlippedTokenFailsChecksum) {
  char byte;
  std::ifstream(copy_ / "train_000003.bin", std::ios::binary).seekg(5000).read(&byte, 1);
  patch("train_000003.bin", 5000, std::string(1, char(byte ^ 0x5A)));
  expect_error("train_000003.bin: checksum mismatch");
}

TEST_F(CorruptDataset, ShardFromAnotherTokenizer) {
  patch("train_000000.bin", 24, std::string(64, 'f'));
  expect_error("train_000000.bin: made by another tokenizer than");
}

TEST_F(CorruptDataset, DatasetFromAnotherTokenizer) {
  expect_error("meta.json: made by another tokenizer", std::string(64, '0'));
}

TEST_F(CorruptDataset, MissingShard) {
  fs::remove(copy_ / "train_000004.bin");
  expect_error("train_000004.bin: No such file or directory");
}

TEST_F(CorruptDataset, MissingOrBrokenMeta) {
  patch("meta.json", 0, "[");
  expect_error("meta.json: ");
  fs::remove(copy_ / "meta.json");
  expect_error("meta.json: missing (not a `dtrn prep` output, or prep did not finish)");
}

// A token id the vocabulary does not have, in a shard whose checksum in meta.json was updated to match
// (a shard written by another tool, or corrupted before prep hashed it): the open names the shard and the
// offset instead of letting the id reach the model's embedding lookup.
TEST_F(CorruptDataset, TokenIdBeyondTheVocabularyWithAValidChecksum) {
  const std::string shard = "train_000002.bin";
  const std::string old_sha = sha256_hex(testing::slurp(copy_ / shard));
  const size_t offset = 1234;
  patch(shard, kShardHeaderBytes + 2 * offset, std::string("\x60\xEA", 2));  // 60000, little-endian
  const std::string new_sha = sha256_hex(testing::slurp(copy_ / shard));
  std::string meta = testing::slurp(copy_ / "meta.json");
  const size_t at = meta.find(old_sha);
  ASSERT_NE(at, std::string::npos);
  meta.replace(at, old_sha.size(), new_sha);
  std::ofstream(copy_ / "meta.json", std::ios::binary | std::ios::trunc) << meta;
  expect_error(shard + ": token id 60000 at token offset 1234 (byte 2596) is not below the vocabulary size 50257 of " +
               (copy_ / "meta.json").string());
}

}  // namespace
}  // namespace dtrn::data
