// `dtrn tokenize` and `dtrn prep` as a user runs them: the built binary, stdin/stdout, exit codes
// and one-line errors on stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

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
  EXPECT_EQ(r.err.rfind("dtrn prep: --input is required\n", 0), 0u) << r.err;
  r = dtrn("prep --input a --out o --threads many");
  EXPECT_EQ(r.err, "dtrn prep: flag --threads expects an integer, got 'many'\n");
}

}  // namespace
