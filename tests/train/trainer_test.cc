// Training runs on real text (the fetched corpus, prepared here): the loss falls well below the unigram
// entropy, runs are reproducible, a resumed run continues exactly, and eval/export agree.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dtrn/data/dataset.h"
#include "dtrn/data/prep.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/job_config.h"
#include "dtrn/runtime/device.h"
#include "dtrn/train/trainer.h"
#include "trainer_fixture.h"

namespace dtrn::train {
namespace {
namespace fs = std::filesystem;


TEST_F(TrainerTest, LossFallsWellBelowTheUnigramEntropy) {
  // The unigram entropy H = -sum p log p (nats) of the training tokens is the lowest loss a model that
  // ignores context can reach on them; a training loss well below it means the model uses context.
  auto train = data::TokenDataset::Open(root_ + "/data", "train");
  ASSERT_TRUE(train.ok());
  std::map<uint16_t, double> counts;
  double n = 0;
  for (const auto& s : (*train)->shards())
    for (uint64_t i = 0; i < s.num_tokens(); ++i, ++n) counts[s.tokens()[i]] += 1;
  double entropy = 0;
  for (auto& [id, c] : counts) entropy -= c / n * std::log(c / n);

  TrainRunOptions o;
  o.run_dir = root_ + "/falls";
  o.quiet = true;
  auto run = run_training(config({"train.steps=150", "train.eval_every=150", "train.eval_batches=8",
                                  "train.warmup_steps=10", "train.lr=6e-3", "checkpoint.every=0"}), o);
  ASSERT_TRUE(run.ok()) << run.status().message();
  auto m = metrics(*run);
  ASSERT_EQ(m.back()["kind"], "val");
  const double first = m.front()["ce"];
  double last = 0;  // mean training CE of the last 10 steps
  int counted = 0;
  for (auto it = m.rbegin(); it != m.rend() && counted < 10; ++it) {
    if ((*it)["kind"] == "train") { last += (*it)["ce"].get<double>(); ++counted; }
  }
  last /= counted;
  EXPECT_NEAR(first, std::log(50257.0), 0.5);  // starts near uniform over the vocabulary
  EXPECT_LT(last, entropy - 0.5) << "unigram entropy " << entropy;  // 0.5 nats: 40% lower perplexity
  EXPECT_LT(m.back()["loss"].get<double>(), first - 2.0);  // and learned something that carries to unseen text
  // The D layer reports its routing every step, within [0, 1].
  for (const auto& line : m) {
    if (line["kind"] != "train") continue;
    ASSERT_EQ(line["layers"].size(), 1u);
    EXPECT_EQ(line["layers"][0]["layer"], 1);
    EXPECT_GE(line["layers"][0]["f"].get<double>(), 0.0);
    EXPECT_LE(line["layers"][0]["f"].get<double>(), 1.0);
  }
}

TEST_F(TrainerTest, SameConfigAndSeedGiveIdenticalMetrics) {
  TrainRunOptions a, b;
  a.run_dir = root_ + "/same-a";
  b.run_dir = root_ + "/same-b";
  a.quiet = b.quiet = true;
  auto ra = run_training(config(), a);
  ASSERT_TRUE(ra.ok()) << ra.status().message();
  auto rb = run_training(config(), b);
  ASSERT_TRUE(rb.ok()) << rb.status().message();
  EXPECT_EQ(metrics(a.run_dir), metrics(b.run_dir));
  EXPECT_EQ(metrics(a.run_dir).size(), 6u + 2u);  // six train lines, two val lines
  // Another seed gives another run.
  TrainRunOptions c;
  c.run_dir = root_ + "/same-c";
  c.quiet = true;
  ASSERT_TRUE(run_training(config({"train.seed=6"}), c).ok());
  EXPECT_NE(metrics(a.run_dir), metrics(c.run_dir));
}

TEST_F(TrainerTest, ResumeContinuesExactlyLikeAnUninterruptedRun) {
  TrainRunOptions full;
  full.run_dir = root_ + "/resume-full";
  full.quiet = true;
  ASSERT_TRUE(run_training(config(), full).ok());

  // Interrupt after the step-3 checkpoint: a copy of the run as a crash after step 4 would leave it
  // (the step-6 checkpoint gone, metrics holding a line past the checkpoint).
  const std::string cut = root_ + "/resume-cut";
  fs::copy(full.run_dir, cut, fs::copy_options::recursive);
  fs::remove_all(cut + "/checkpoints/step-00000006");
  {
    auto m = metrics(full.run_dir);
    std::ifstream in(full.run_dir + "/metrics.jsonl");
    std::string line, kept;
    int lines = 0;
    while (std::getline(in, line) && lines < 5) { kept += line + "\n"; ++lines; }  // steps 1-3, val 3, step 4
    std::ofstream(cut + "/metrics.jsonl", std::ios::trunc) << kept;
  }
  TrainRunOptions resume;
  resume.run_dir = cut;
  resume.resume = true;
  resume.quiet = true;
  ASSERT_TRUE(run_training(config(), resume).ok());
  EXPECT_EQ(metrics(cut), metrics(full.run_dir));
}

TEST_F(TrainerTest, AFreshRunNeverOverwritesAnotherRunsCheckpoints) {
  TrainRunOptions o;
  o.run_dir = root_ + "/occupied";
  o.quiet = true;
  ASSERT_TRUE(run_training(config({"train.steps=3"}), o).ok());
  const std::string before = std::to_string(fs::file_size(o.run_dir + "/metrics.jsonl"));
  auto again = run_training(config({"train.steps=3"}), o);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("--resume"), std::string::npos) << again.status().message();
  EXPECT_EQ(std::to_string(fs::file_size(o.run_dir + "/metrics.jsonl")), before);
  EXPECT_TRUE(verify_checkpoint(o.run_dir + "/checkpoints/step-00000003").ok());
}

TEST_F(TrainerTest, ACudaDeviceThatDoesNotExistIsRefusedAtStartNamingTheKey) {
  // Without a GPU the device does not exist: the run must stop before training with one line naming
  // train.device. (With a GPU, cuda trains: gpu_trainer_test.cc.)
  if (cuda_available()) GTEST_SKIP() << "a GPU is present; gpu_trainer_test.cc covers training on it";
  TrainRunOptions o;
  o.run_dir = root_ + "/cuda-refused";
  o.quiet = true;
  auto run = run_training(config({"train.device=cuda"}), o);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().message().rfind("train.device cuda: ", 0), 0u) << run.status().message();
  EXPECT_FALSE(fs::exists(o.run_dir + "/checkpoints"));
}

TEST_F(TrainerTest, ResumeWithoutACheckpointIsAClearError) {
  TrainRunOptions o;
  o.run_dir = root_ + "/empty-run";
  o.resume = true;
  o.quiet = true;
  auto run = run_training(config(), o);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find("--resume"), std::string::npos) << run.status().message();
}

// Runs the dtrn binary; returns its stdout and sets *code.
std::string run_cli(const std::string& args, int* code) {
  const std::string out_file = fs::temp_directory_path() / ("dtrn-cli-" + std::to_string(getpid()));
  *code = std::system((std::string(DTRN_BINARY) + " " + args + " > " + out_file + " 2>&1").c_str());
  std::ifstream in(out_file);
  std::stringstream ss;
  ss << in.rdbuf();
  fs::remove(out_file);
  return ss.str();
}

TEST_F(TrainerTest, EvalMatchesValidationAndExportImportRoundTripGivesTheSameLoss) {
  // The threshold bias off: a training step moves it (by design), and this test is about the weights;
  // checkpoint_test.cc checks that the biases travel through export and import.
  TrainRunOptions o;
  o.run_dir = root_ + "/export";
  o.quiet = true;
  ASSERT_TRUE(run_training(config({"routing.bias_rate=0"}), o).ok());
  int code = 0;
  const std::string eval_args = " --data " + root_ + "/data --batches 2";
  auto e1 = nlohmann::json::parse(run_cli("eval --checkpoint " + o.run_dir + eval_args, &code));
  ASSERT_EQ(code, 0);
  // `dtrn eval` on the run's last checkpoint equals the trainer's last validation (same windows).
  auto m = metrics(o.run_dir);
  EXPECT_DOUBLE_EQ(e1["loss"].get<double>(), m.back()["loss"].get<double>());
  EXPECT_EQ(e1["layers"].size(), 1u);

  const std::string file = root_ + "/exported.safetensors";
  run_cli("export --checkpoint " + o.run_dir + " --out " + file, &code);
  ASSERT_EQ(code, 0);
  // Train zero steps from the exported file: the new run's checkpoint holds the imported weights.
  TrainRunOptions o2;
  o2.run_dir = root_ + "/imported";
  o2.quiet = true;
  o2.init_from = file;
  ASSERT_TRUE(run_training(config({"train.steps=1", "train.lr=1e-30", "train.min_lr=0", "train.warmup_steps=0",
                                    "train.weight_decay=0", "routing.bias_rate=0"}), o2).ok());
  auto e2 = nlohmann::json::parse(run_cli("eval --checkpoint " + o2.run_dir + eval_args, &code));
  ASSERT_EQ(code, 0);
  // One step at lr 1e-30 moves no f32 weight (the update is far below half an ulp).
  EXPECT_DOUBLE_EQ(e2["loss"].get<double>(), e1["loss"].get<double>());
}

TEST_F(TrainerTest, EveryRoutingControlRunsAndReportsItsState) {
  TrainRunOptions o;
  o.run_dir = root_ + "/controls";
  o.quiet = true;
  auto run = run_training(config({"routing.balance_on=soft_fraction", "routing.balance_weight=1",
                                  "routing.balance_multiplier_lr=0.1", "routing.z_loss_weight=1e-3",
                                  "routing.fallback=band", "routing.bias_gamma=1e-3", "checkpoint.every=0"}),
                          o);
  ASSERT_TRUE(run.ok()) << run.status().message();
  double mu = 0;  // the multiplier the step used: 0, then mu += 0.1 (f - rho) after each step
  for (const auto& line : metrics(*run)) {
    if (line["kind"] != "train") continue;
    EXPECT_GT(line["routing_z_loss"].get<double>(), 0.0);
    ASSERT_EQ(line["layers"].size(), 1u);
    const auto& l = line["layers"][0];
    EXPECT_LE(l["p10"].get<double>(), l["p50"].get<double>());
    EXPECT_LE(l["p50"].get<double>(), l["p90"].get<double>());
    EXPECT_NE(l["b"].get<double>(), 0.0);  // the bias is on (the default rate) from the first batch
    EXPECT_NEAR(l["mu"].get<double>(), mu, 1e-12) << "step " << line["step"];
    // The band keeps f inside [0.02, 0.3] (its own choice is the top 10%).
    EXPECT_GE(l["f"].get<double>(), 0.02);
    EXPECT_LE(l["f"].get<double>(), 0.3);
    EXPECT_EQ(l["fallback"].get<bool>(), l["fallbacks"].get<int64_t>() > 0);
    mu += 0.1 * (l["f"].get<double>() - 0.1);
  }
}

TEST_F(TrainerTest, CliReportsBadInputInOneLine) {
  int code = 0;
  std::string out = run_cli("train --config /nonexistent.yaml", &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("/nonexistent.yaml"), std::string::npos) << out;
  out = run_cli("eval --checkpoint " + root_ + "/nothing-here --text /etc/hostname", &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("nothing-here"), std::string::npos) << out;
  out = run_cli("train --bogus", &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("--bogus"), std::string::npos) << out;
}

}  // namespace
}  // namespace dtrn::train
