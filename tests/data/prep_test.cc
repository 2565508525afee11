// `dtrn prep` as a library call: byte-identical output whatever the thread count, validation
// documents never in training shards (the train stream is rebuilt from an independent encode of its
// documents), and one clear error for each kind of bad input, never a folder that looks complete.
#include "dtrn/data/prep.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dtrn/data/dataset.h"
#include "dtrn/data/tokenizer.h"
#include "test_util.h"

namespace dtrn::data {
namespace {

namespace fs = std::filesystem;
using testing::assets_tokenizer;
using testing::kAssets;
using testing::slurp;

class PrepTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::fresh_test_dir("prep"); }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  fs::path dir_;
};

TEST_F(PrepTest, ByteIdenticalWhateverTheThreadCount) {
  std::vector<std::string> listings;
  for (int threads : {1, 2, 5}) {
    PrepOptions o;
    o.inputs = {kAssets + "/corpus"};
    o.out_dir = (dir_ / ("out" + std::to_string(threads))).string();
    o.threads = threads;
    o.shard_tokens = 1 << 20;  // several shards per split, documents spanning shard ends
    auto meta = prepare_dataset(assets_tokenizer(), o);
    ASSERT_TRUE(meta.ok()) << meta.status().message();
    EXPECT_GT(meta->train.shards.size(), 3u);
    std::string listing;
    for (const auto& e : fs::directory_iterator(o.out_dir)) {
      listing += e.path().filename().string() + " " + std::to_string(e.file_size()) + "\n";
    }
    listings.push_back(listing);
    if (threads == 1) continue;
    for (const auto& e : fs::directory_iterator(o.out_dir)) {
      ASSERT_EQ(slurp(e.path()), slurp(dir_ / "out1" / e.path().filename())) << e.path();
    }
  }
  EXPECT_EQ(listings[0], listings[1]);
  EXPECT_EQ(listings[0], listings[2]);
}

// Rebuilds each split's stream from an independent encode of its documents ([eot] + ids, in order)
// and compares it with the shards: so validation documents are exactly where meta.json says, and
// nowhere else.
TEST_F(PrepTest, ValidationDocumentsNeverInTrainingShards) {
  PrepOptions o;
  o.inputs = {kAssets + "/corpus"};
  o.out_dir = (dir_ / "out").string();
  o.shard_tokens = 3'000'000;
  auto meta = prepare_dataset(assets_tokenizer(), o);
  ASSERT_TRUE(meta.ok()) << meta.status().message();
  EXPECT_EQ(meta->val.documents, 3u + 12u);  // three books, addresses 2010..2021

  std::vector<uint16_t> expected_train, expected_val;
  for (const DocumentEntry& d : meta->documents) {
    const bool val = d.split == "val";
    const bool want_val = d.path.find("carroll-alice") != std::string::npos ||
                          d.path.find("shakespeare-macbeth") != std::string::npos ||
                          d.path.find("chesterton-thursday") != std::string::npos ||
                          d.path.find("/sotu/201") != std::string::npos ||
                          d.path.find("/sotu/202") != std::string::npos;
    EXPECT_EQ(val, want_val) << d.path;
    std::vector<uint16_t>& stream = val ? expected_val : expected_train;
    stream.push_back(uint16_t(assets_tokenizer().eot_id()));
    for (uint32_t id : assets_tokenizer().encode(slurp(d.path))) stream.push_back(uint16_t(id));
  }
  for (const char* split : {"train", "val"}) {
    auto data = TokenDataset::Open(o.out_dir, split);
    ASSERT_TRUE(data.ok()) << data.status().message();
    std::vector<uint16_t> got;
    for (const ShardFile& s : (*data)->shards())
      got.insert(got.end(), s.tokens(), s.tokens() + s.num_tokens());
    EXPECT_EQ(got, std::string(split) == "train" ? expected_train : expected_val) << split;
    EXPECT_EQ(got.size(), meta->split(split)->tokens);
  }
}

TEST_F(PrepTest, ValPatternsMatchTrailingPathParts) {
  EXPECT_TRUE(matches_val_pattern("carroll-alice", ".assets/corpus/gutenberg/carroll-alice.txt"));
  EXPECT_TRUE(matches_val_pattern("sotu/201*", "/x/.assets/corpus/sotu/2016-barack-obama.txt"));
  EXPECT_TRUE(matches_val_pattern("*.md", "notes/a.md"));
  EXPECT_FALSE(matches_val_pattern("sotu/201*", "corpus/sotu/2009-barack-obama.txt"));
  EXPECT_FALSE(matches_val_pattern("alice", "corpus/gutenberg/carroll-alice.txt"));
}

void expect_error(const StatusOr<DatasetMeta>& r, const std::string& part) {
  ASSERT_FALSE(r.ok()) << "expected an error containing '" << part << "'";
  EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << "not one line";
}

TEST_F(PrepTest, BadInputsGiveOneClearError) {
  const std::string a = write("in/a.txt", "Some text.");
  PrepOptions o;
  o.out_dir = (dir_ / "out").string();

  o.inputs = {a, (dir_ / "in/missing.txt").string()};
  expect_error(prepare_dataset(assets_tokenizer(), o), "missing.txt: No such file or directory");

  o.inputs = {a, "/dev/null"};
  expect_error(prepare_dataset(assets_tokenizer(), o), "/dev/null: not a regular file");

  o.inputs = {a, write("in/empty.txt", "")};
  expect_error(prepare_dataset(assets_tokenizer(), o), "empty.txt: empty document");

  o.inputs = {a};
  o.val_patterns = {"nothing-like-this"};
  expect_error(prepare_dataset(assets_tokenizer(), o),
               "--val-docs 'nothing-like-this' matches no input document");

  o.val_patterns = {"a"};
  expect_error(prepare_dataset(assets_tokenizer(), o), "no training data left");

  o.val_patterns = {};
  o.inputs = {(dir_ / "emptydir").string()};
  fs::create_directories(o.inputs[0]);
  expect_error(prepare_dataset(assets_tokenizer(), o), "emptydir: folder holds no .txt files");

  o.inputs = {};
  expect_error(prepare_dataset(assets_tokenizer(), o), "no input documents");
}

// A run that fails half-way leaves the earlier dataset in the output folder as it was (it still opens,
// its files unchanged) and no temporary folder beside it; into a new folder it leaves no folder at all.
TEST_F(PrepTest, AFailedRunLeavesTheEarlierDatasetAsItWas) {
  PrepOptions o;
  o.out_dir = (dir_ / "out").string();
  o.inputs = {write("in/a.txt", "First document."), write("in/b.txt", "Second one.")};
  o.val_patterns = {"b"};
  o.shard_tokens = 2;
  ASSERT_TRUE(prepare_dataset(assets_tokenizer(), o).ok());
  const std::string meta_before = testing::slurp(dir_ / "out" / "meta.json");
  const std::string shard_before = testing::slurp(dir_ / "out" / "train_000000.bin");

  o.inputs.push_back(write("in/c.txt", ""));
  expect_error(prepare_dataset(assets_tokenizer(), o), "c.txt: empty document");
  EXPECT_TRUE(TokenDataset::Open(o.out_dir, "train").ok());
  EXPECT_EQ(testing::slurp(dir_ / "out" / "meta.json"), meta_before);
  EXPECT_EQ(testing::slurp(dir_ / "out" / "train_000000.bin"), shard_before);
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().rfind("out.", 0), std::string::npos) << e.path();
  }

  o.out_dir = (dir_ / "new").string();
  expect_error(prepare_dataset(assets_tokenizer(), o), "c.txt: empty document");
  EXPECT_FALSE(fs::exists(o.out_dir));

  o.out_dir = (dir_ / "out").string();
  o.inputs.pop_back();
  o.shard_tokens = 1000;  // fewer shards than before: the old ones must not linger
  ASSERT_TRUE(prepare_dataset(assets_tokenizer(), o).ok());
  EXPECT_TRUE(TokenDataset::Open(o.out_dir, "val").ok());
  EXPECT_FALSE(fs::exists(dir_ / "out" / "train_000001.bin"));
}

}  // namespace
}  // namespace dtrn::data
