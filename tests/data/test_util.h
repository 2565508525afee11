// Shared fixtures of the dtrn_data tests: the fetched assets (`make assets`), the GPT-2 tokenizer
// loaded from them once per test binary, whole-file reads for expectations, and a fresh temporary
// folder per test. Header-only; the tokenizer is built on first use (thread-safe static).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "dtrn/data/tokenizer.h"

namespace dtrn::testing {

inline const std::string kAssets = DTRN_SOURCE_DIR "/.assets";

// The tokenizer in .assets/tokenizer. Loading the real vocabulary takes a moment, so it happens
// once.
inline const data::Tokenizer& assets_tokenizer() {
  static const data::Tokenizer t = [] {
    auto r = data::Tokenizer::Load(kAssets + "/tokenizer");
    if (!r.ok()) throw std::runtime_error(r.status().message() + " (run `make assets`)");
    return std::move(r).value();
  }();
  return t;
}

// The bytes of a file; empty when it cannot be read (the expectation on them then fails).
inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// An empty folder for the running test, <tmp>/dtrn_<prefix>_<test name>_<pid>, replacing any
// leftover of an earlier run. The caller removes it.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() /
      ("dtrn_" + prefix + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name() +
       "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

}  // namespace dtrn::testing
