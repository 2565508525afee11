// The trainer tests' fixture: a small dataset prepared once per test process from the fetched corpus,
// a tiny job config over it, the metrics of a run with the timing fields removed, `dtrn train` under
// mpirun, and the comparison of two runs' loss curves.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dtrn/data/prep.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/runtime/file_io.h"
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

  // The `dtrn train` command of job `c` in run directory `run` (its config written to RUN.yaml, next to it),
  // with `args` added.
  static std::string train_command(const JobConfig& c, const std::string& run, const std::string& args = "") {
    const std::string yaml = run + ".yaml";
    EXPECT_TRUE(write_file_atomic(yaml, to_yaml(c)).ok());
    return std::string(DTRN_BINARY) + " train --config " + yaml + " --run-dir " + run + " --quiet " + args;
  }

  // Runs `apps` (mpirun's app contexts, "-np N [-x VAR=VALUE] COMMAND", several joined by " : ") under
  // `mpirun --oversubscribe` (`prefix` before mpirun, `mpirun_args` after its options); returns the exit
  // status and puts stderr (kept in RUN.err) in *err.
  static int mpirun_apps(const std::string& apps, const std::string& run, std::string* err,
                         const std::string& prefix = "", const std::string& mpirun_args = "") {
    const std::string err_file = run + ".err";
    const std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " +
                            prefix + " " + std::string(DTRN_MPIEXEC) + " --oversubscribe " + mpirun_args + " " +
                            apps + " > /dev/null 2> " + err_file;
    const int status = std::system(cmd.c_str());
    std::ifstream in(err_file);
    err->assign(std::istreambuf_iterator<char>(in), {});
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // `dtrn train` of job `c` under mpirun with np ranks.
  static int mpirun(int np, const JobConfig& c, const std::string& run, std::string* err,
                    const std::string& prefix = "", const std::string& mpirun_args = "", const std::string& args = "") {
    return mpirun_apps("-np " + std::to_string(np) + " " + train_command(c, run, args), run, err, prefix, mpirun_args);
  }

  // The lines of `kind` ("train", "val") in a run's metrics.jsonl.
  static std::vector<nlohmann::json> lines(const std::string& run, const std::string& kind) {
    std::vector<nlohmann::json> out;
    for (const auto& j : metrics(run)) {
      if (j["kind"] == kind) out.push_back(j);
    }
    return out;
  }

  // Same steps, losses within `tol`, the same routed fraction of every D layer at every step (f is a
  // count of routed tokens over all tokens, so equal f means the same number of decisions each way).
  // f_tol 0: identical routed fractions and fallbacks. Validation lines, if any, agree within `tol` too.
  // Gradient norms agree within tol + norm_rtol * |norm|.
  static void expect_same_curve(const std::string& a, const std::string& b, double tol, size_t steps = 20,
                                double f_tol = 0, double norm_rtol = 0) {
    const auto va = lines(a, "val"), vb = lines(b, "val");
    ASSERT_EQ(va.size(), vb.size());
    for (size_t i = 0; i < va.size(); ++i) {
      EXPECT_EQ(va[i]["step"], vb[i]["step"]);
      EXPECT_NEAR(va[i]["loss"].get<double>(), vb[i]["loss"].get<double>(), tol);
    }
    const auto ma = lines(a, "train"), mb = lines(b, "train");
    ASSERT_EQ(ma.size(), steps);
    ASSERT_EQ(ma.size(), mb.size());
    for (size_t i = 0; i < ma.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(i + 1));
      EXPECT_EQ(ma[i]["step"], mb[i]["step"]);
      EXPECT_EQ(ma[i]["samples_hash"], mb[i]["samples_hash"]);
      EXPECT_NEAR(ma[i]["loss"].get<double>(), mb[i]["loss"].get<double>(), tol);
      const double norm = mb[i]["grad_norm"].get<double>();
      EXPECT_NEAR(ma[i]["grad_norm"].get<double>(), norm, tol + norm_rtol * std::abs(norm));
      ASSERT_EQ(ma[i]["layers"].size(), mb[i]["layers"].size());
      for (size_t l = 0; l < ma[i]["layers"].size(); ++l) {
        EXPECT_NEAR(ma[i]["layers"][l]["f"].get<double>(), mb[i]["layers"][l]["f"].get<double>(), f_tol);
        if (f_tol == 0) {
          EXPECT_EQ(ma[i]["layers"][l]["fallback"], mb[i]["layers"][l]["fallback"]);
        }
      }
    }
  }

  inline static std::string root_;
};

}  // namespace dtrn::train
