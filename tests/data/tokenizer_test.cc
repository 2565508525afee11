// The tokenizer against independent references: the 64 r50k_base golden encodings of
// gpt-tokenizer's TestPlans.txt, agreement of the encoder.json + vocab.bpe and .tiktoken loaders,
// round trips over the whole fetched corpus and over arbitrary bytes, and clear errors for bad
// files.
#include "dtrn/data/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace dtrn::data {
namespace {

const std::string kTokenizerDir = DTRN_SOURCE_DIR "/.assets/tokenizer";
const std::string kCorpusDir = DTRN_SOURCE_DIR "/.assets/corpus";

using testing::slurp;

// Loading the real vocabulary takes a moment; each form is loaded once per test binary.
const Tokenizer& gpt2_files() {
  static const Tokenizer t = [] {
    auto r =
        Tokenizer::FromGpt2Files(kTokenizerDir + "/encoder.json", kTokenizerDir + "/vocab.bpe");
    if (!r.ok()) throw std::runtime_error(r.status().message() + " (run `make assets`)");
    return std::move(r).value();
  }();
  return t;
}

const Tokenizer& tiktoken_file() {
  static const Tokenizer t = [] {
    auto r = Tokenizer::FromTiktoken(kTokenizerDir + "/r50k_base.tiktoken");
    if (!r.ok()) throw std::runtime_error(r.status().message() + " (run `make assets`)");
    return std::move(r).value();
  }();
  return t;
}

struct Plan {
  std::string sample;
  std::vector<uint32_t> encoded;
};

// TestPlans.txt: blocks of "EncodingName: ...", "Sample: ...", "Encoded: [a, b, ...]".
std::vector<Plan> r50k_plans() {
  std::istringstream in(slurp(kTokenizerDir + "/TestPlans.txt"));
  std::vector<Plan> plans;
  std::string line, encoding;
  Plan plan;
  while (std::getline(in, line)) {
    if (line.rfind("EncodingName: ", 0) == 0) encoding = line.substr(14);
    if (line.rfind("Sample: ", 0) == 0) plan.sample = line.substr(8);
    if (line.rfind("Encoded: [", 0) == 0 && encoding == "r50k_base") {
      plan.encoded.clear();
      std::string body = line.substr(10, line.size() - 11);
      std::istringstream ids(body);
      std::string id;
      while (std::getline(ids, id, ',')) plan.encoded.push_back(uint32_t(std::stoul(id)));
      plans.push_back(plan);
    }
  }
  return plans;
}

TEST(Tokenizer, GoldenR50kEncodings) {
  std::vector<Plan> plans = r50k_plans();
  ASSERT_EQ(plans.size(), 64u);
  for (const Tokenizer* t : {&gpt2_files(), &tiktoken_file()}) {
    for (const Plan& p : plans) {
      EXPECT_EQ(t->encode(p.sample), p.encoded) << "sample: " << p.sample;
      EXPECT_EQ(t->decode(p.encoded).value(), p.sample);
    }
  }
}

TEST(Tokenizer, ShapeOfGpt2) {
  const Tokenizer& t = gpt2_files();
  EXPECT_EQ(t.vocab_size(), 50257u);
  EXPECT_EQ(t.eot_id(), 50256u);
  EXPECT_EQ(t.token_bytes(50256), "<|endoftext|>");
  EXPECT_EQ(t.name(), "gpt2");
  EXPECT_EQ(t.encode("Hello world"), (std::vector<uint32_t>{15496, 995}));
  // Special tokens in text are plain characters: "<|", "end", "of", "text", "|>".
  EXPECT_EQ(t.encode("<|endoftext|>"), (std::vector<uint32_t>{27, 91, 437, 1659, 5239, 91, 29}));
}

// The tiktoken loader rebuilds GPT-2's merge list from ranks (Note [Merges from ranks]); equal
// identities mean equal token bytes, equal merges in equal order and the same <|endoftext|>.
TEST(Tokenizer, BothFileFormsAgree) {
  EXPECT_EQ(gpt2_files().identity(), tiktoken_file().identity());
  EXPECT_EQ(gpt2_files().vocab_size(), tiktoken_file().vocab_size());
  for (uint32_t id = 0; id < gpt2_files().vocab_size(); ++id) {
    ASSERT_EQ(gpt2_files().token_bytes(id), tiktoken_file().token_bytes(id)) << "id " << id;
  }
  std::string sample = slurp(kCorpusDir + "/gutenberg/carroll-alice.txt");
  EXPECT_EQ(gpt2_files().encode(sample), tiktoken_file().encode(sample));
  EXPECT_EQ(gpt2_files().sources().size(), 2u);
  EXPECT_EQ(tiktoken_file().sources().size(), 1u);
}

TEST(Tokenizer, RoundTripsWholeCorpus) {
  const Tokenizer& t = gpt2_files();
  int files = 0;
  size_t bytes = 0, tokens = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(kCorpusDir)) {
    if (!entry.is_regular_file()) continue;
    std::string text = slurp(entry.path().string());
    std::vector<uint32_t> ids = t.encode(text);
    ASSERT_EQ(t.decode(ids).value(), text) << entry.path();
    bytes += text.size();
    tokens += ids.size();
    ++files;
  }
  EXPECT_EQ(files, 251);
  // English prose runs at about 4 bytes per GPT-2 token; far off means a broken merge table.
  EXPECT_GT(double(bytes) / double(tokens), 3.5);
  EXPECT_LT(double(bytes) / double(tokens), 5.0);
}

// Note [Invalid UTF-8]: every byte string survives encode + decode.
TEST(Tokenizer, RoundTripsArbitraryBytes) {
  const Tokenizer& t = gpt2_files();
  std::mt19937 rng(7);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string s(1 + rng() % 64, '\0');
    for (char& c : s) c = char(rng() % 4 == 0 ? 0x80 + rng() % 128 : rng() % 256);
    ASSERT_EQ(t.decode(t.encode(s)).value(), s) << "iteration " << iter;
  }
  EXPECT_EQ(t.encode("\xff"), (std::vector<uint32_t>{187}));  // encoder.json's "\u00ff": byte 0xFF
}

// Threads share one Tokenizer, each with its own piece cache: same ids as one thread, run twice.
TEST(Tokenizer, ThreadsAgree) {
  const Tokenizer& t = gpt2_files();
  std::string text = slurp(kCorpusDir + "/sotu/2010-barack-obama.txt");
  std::vector<uint32_t> expected = t.encode(text);
  std::vector<std::vector<uint32_t>> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { got[i] = t.encode(text); });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
  EXPECT_EQ(t.encode(text), expected);
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  std::vector<uint32_t> ids = {15496, 50257};
  auto r = gpt2_files().decode(ids);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("50257"), std::string::npos) << r.status().message();
}

class TokenizerFileErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dtrn_tok_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& data) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << data;
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(TokenizerFileErrors, MissingFilesNameTheFolder) {
  auto r = Tokenizer::Load(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(dir_.string()), std::string::npos) << r.status().message();
  auto f = Tokenizer::FromTiktoken((dir_ / "nope.tiktoken").string());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("nope.tiktoken: No such file"), std::string::npos);
}

TEST_F(TokenizerFileErrors, CorruptFilesNameFileAndLine) {
  auto bad_json =
      Tokenizer::FromGpt2Files(write("encoder.json", "{\"a\": "), write("vocab.bpe", ""));
  ASSERT_FALSE(bad_json.ok());
  EXPECT_NE(bad_json.status().message().find("encoder.json: not valid JSON"), std::string::npos);

  auto bad_rank = Tokenizer::FromTiktoken(write("x.tiktoken", "IQ== 0\nIg== 5\n"));
  ASSERT_FALSE(bad_rank.ok());
  EXPECT_NE(bad_rank.status().message().find("x.tiktoken:2:"), std::string::npos)
      << bad_rank.status().message();

  auto few_bytes = Tokenizer::FromTiktoken(write("y.tiktoken", "IQ== 0\n"));
  ASSERT_FALSE(few_bytes.ok());
  EXPECT_NE(few_bytes.status().message().find("no token for byte"), std::string::npos);
}

}  // namespace
}  // namespace dtrn::data
