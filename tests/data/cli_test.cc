// `dtrn tokenize` and `dtrn prep` as a user runs them: the built binary, stdin/stdout, exit codes
// and one-line errors on stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "dtrn/data/dataset.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string out, err;
};

using dtrn::testing::slurp;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = dtrn::testing::fresh_test_dir("cli"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `dtrn <args>` with `input` on stdin, from the repo root (so .assets is the default).
  Result dtrn(const std::string& args, const std::string& input = "") {
    const fs::path in = dir_ / "stdin", out = dir_ / "stdout", err = dir_ / "stderr";
    std::ofstream(in, std::ios::binary) << input;
    const std::string cmd = "cd '" DTRN_SOURCE_DIR "' && env -u DTRN_ASSETS '" DTRN_BINARY "' " +
                            args + " < '" + in.string() + "' > '" + out.string() + "' 2> '" +
                            err.string() + "'";
    int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  }

  fs::path dir_;
};

TEST_F(CliTest, TokenizeRoundTrip) {
  const std::string text = "Hello world\n\tÇa va? \xff bytes too\n";
  Result enc = dtrn("tokenize", text);
  ASSERT_EQ(enc.code, 0) << enc.err;
  EXPECT_EQ(enc.out.rfind("15496 995 ", 0), 0u) << enc.out;
  EXPECT_EQ(enc.out.back(), '\n');
  Result dec = dtrn("tokenize --decode", enc.out);
  ASSERT_EQ(dec.code, 0) << dec.err;
  EXPECT_EQ(dec.out, text);
  EXPECT_EQ(dtrn("tokenize", "").out, "\n");
}

TEST_F(CliTest, TokenizeErrorsAreOneLine) {
  Result r = dtrn("tokenize --decode", "15496 50257");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err,
            "dtrn tokenize: --decode: token id 50257 (position 1) is not below the vocabulary size "
            "50257\n");
  r = dtrn("tokenize --decode", "12 x3");
  EXPECT_EQ(r.err, "dtrn tokenize: --decode: 'x3' is not a token id\n");
  r = dtrn("tokenize --tokenizer-dir /nonexistent");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent: no tokenizer files"), std::string::npos) << r.err;
  EXPECT_EQ(dtrn("tokenize --bogus").code, 2);
}

TEST_F(CliTest, HelpExitsZero) {
  for (const char* cmd : {"tokenize --help", "prep --help"}) {
    Result r = dtrn(cmd);
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_EQ(r.out.rfind("usage: dtrn ", 0), 0u) << r.out;
  }
}

TEST_F(CliTest, PrepWritesShardsAndMeta) {
  std::ofstream(dir_ / "a.txt") << "The first document.";
  std::ofstream(dir_ / "b.txt") << "The second document.";
  const std::string out = (dir_ / "out").string();
  Result r = dtrn("prep --input " + (dir_ / "a.txt").string() + " " + (dir_ / "b.txt").string() +
                  " --out " + out + " --val-docs b --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("train     1 documents"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(out + "/train_000000.bin"));
  EXPECT_TRUE(fs::exists(out + "/val_000000.bin"));
  EXPECT_NE(slurp(out + "/meta.json").find("\"bytes_per_token\""), std::string::npos);
}

TEST_F(CliTest, PrepErrorsAreOneLine) {
  Result r =
      dtrn("prep --input " + (dir_ / "missing.txt").string() + " --out " + (dir_ / "o").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err,
            "dtrn prep: " + (dir_ / "missing.txt").string() + ": No such file or directory\n");
  r = dtrn("prep --out x");
  EXPECT_EQ(r.code, 2);
  // One line pointing at --help, not the whole usage.
  EXPECT_EQ(r.err, "dtrn prep: --input is required (dtrn prep --help shows the usage)\n");
  r = dtrn("prep --input a --out o --threads many");
  EXPECT_EQ(r.err, "dtrn prep: flag --threads expects an integer, got 'many'\n");
  r = dtrn("prep --input a --out o --threads 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dtrn prep: --threads must be at least 1 (leave it out to use every core)\n");
}

// Every file under `dir` (relative path -> bytes).
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) files[fs::relative(e.path(), dir)] = slurp(e.path());
  return files;
}

// A prep that fails part-way (an empty document) into the folder of an earlier dataset leaves that
// dataset exactly as it was and loadable; a successful one replaces it whole.
TEST_F(CliTest, AFailedPrepLeavesTheEarlierDatasetAsItWas) {
  std::ofstream(dir_ / "a.txt") << "The first document.";
  std::ofstream(dir_ / "b.txt") << "The second document.";
  std::ofstream(dir_ / "c.txt") << "A third, longer document that the second dataset adds to the first.";
  std::ofstream(dir_ / "empty.txt");
  const std::string out = (dir_ / "out").string();
  const std::string ab = (dir_ / "a.txt").string() + " " + (dir_ / "b.txt").string();
  ASSERT_EQ(dtrn("prep --input " + ab + " --out " + out + " --val-docs b").code, 0);
  const auto before = snapshot(out);
  ASSERT_EQ(before.count("meta.json"), 1u);

  Result r = dtrn("prep --input " + ab + " " + (dir_ / "empty.txt").string() + " --out " + out + " --val-docs b");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dtrn prep: " + (dir_ / "empty.txt").string() + ": empty document\n");
  EXPECT_EQ(snapshot(out), before);
  EXPECT_TRUE(dtrn::data::TokenDataset::Open(out, "train").ok());
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find("out.tmp-"), std::string::npos) << e.path();
  }

  ASSERT_EQ(dtrn("prep --input " + ab + " " + (dir_ / "c.txt").string() + " --out " + out + " --val-docs b").code, 0);
  auto ds = dtrn::data::TokenDataset::Open(out, "train");
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ((*ds)->meta().train.documents, 2u);
}

// The swap would delete whatever else the output folder holds, so such a folder is refused.
TEST_F(CliTest, PrepRefusesAnOutputFolderHoldingOtherFiles) {
  std::ofstream(dir_ / "a.txt") << "The first document.";
  std::ofstream(dir_ / "b.txt") << "The second document.";
  fs::create_directories(dir_ / "home");
  std::ofstream(dir_ / "home" / "thesis.tex") << "precious";
  Result r = dtrn("prep --input " + (dir_ / "a.txt").string() + " " + (dir_ / "b.txt").string() + " --out " +
                  (dir_ / "home").string() + " --val-docs b");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dtrn prep: " + (dir_ / "home").string() +
                       ": holds thesis.tex, which dtrn prep did not write; --out must be a new or empty folder "
                       "or an earlier dtrn prep output\n");
  EXPECT_EQ(slurp(dir_ / "home" / "thesis.tex"), "precious");
}

}  // namespace
