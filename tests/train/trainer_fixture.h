// The trainer tests' fixture: a small dataset prepared once per test process from the fetched corpus,
// a tiny job config over it, and the metrics of a run with the timing fields removed.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dtrn/data/prep.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/train/job_config.h"

namespace dtrn::train {

// A small dataset from two books of the fetched corpus: Blake's poems (about 9k tokens) to train, so a
// short run sees them several times, and Burgess's Buster Brown to validate. Prepared once per test
// process into a private temporary folder.
class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/dtrn-trainer-test-XXXXXX";
    root_ = mkdtemp(tmpl);
    const std::string corpus = std::string(DTRN_SOURCE_DIR) + "/.assets/corpus/gutenberg/";
    auto tok = data::Tokenizer::Load(std::string(DTRN_SOURCE_DIR) + "/.assets/tokenizer");
    ASSERT_TRUE(tok.ok()) << tok.status().message() << " (run `make assets`)";
    data::PrepOptions po;
    po.inputs = {corpus + "blake-poems.txt", corpus + "burgess-busterbrown.txt"};
    po.out_dir = root_ + "/data";
    po.val_patterns = {"burgess-busterbrown"};
    auto meta = data::prepare_dataset(*tok, po);
    ASSERT_TRUE(meta.ok()) << meta.status().message();
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(root_); }

  static JobConfig config(const std::vector<std::string>& sets = {}) {
    const std::string yaml =
        "model: {d_model: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, d_ff: 160, seq_len: 64, layout: TDTT}\n"
        "train: {steps: 6, micro_batch: 4, global_batch: 8, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 2,\n"
        "        seed: 5, device: cpu, eval_every: 3, eval_batches: 2}\n"
        "data: {path: " + root_ + "/data}\n"
        "checkpoint: {every: 3, keep: 0}\n";
    auto c = parse_job_config(yaml, sets);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return *c;
  }

  static std::vector<nlohmann::json> metrics(const std::string& run) {
    std::ifstream in(run + "/metrics.jsonl");
    std::vector<nlohmann::json> out;
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (j["kind"] == "checkpoint") continue;  // records of saves, which differ between runs by design
      j.erase("tokens_per_s");  // timing fields: the only ones allowed to differ
      j.erase("step_ms");
      out.push_back(j);
    }
    return out;
  }

  inline static std::string root_;
};

}  // namespace dtrn::train
