// Job config parsing: defaults, overrides, strict rejection naming the key, and the YAML round trip.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "dtrn/train/job_config.h"

namespace dtrn::train {
namespace {

using ::testing::HasSubstr;

constexpr char kBase[] = R"(
model: {d_model: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, d_ff: 128, seq_len: 32}
train: {steps: 10, micro_batch: 2, global_batch: 4}
data: {path: /tmp/x}
)";

std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  auto c = parse_job_config(yaml, sets);
  EXPECT_FALSE(c.ok()) << yaml;
  return c.ok() ? "" : c.status().message();
}

TEST(JobConfig, DefaultsFromTheDesign) {
  auto c = parse_job_config(kBase);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->model.vocab_size, 50257);
  EXPECT_EQ(c->model.layout, "bilayer");
  EXPECT_DOUBLE_EQ(c->model.norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->model.rope_theta, 10000);
  EXPECT_DOUBLE_EQ(c->routing.sparsity_weight, 8e-4);
  EXPECT_DOUBLE_EQ(c->routing.target_fraction, 0.1);
  EXPECT_DOUBLE_EQ(c->routing.starvation_threshold, 0.01);
  EXPECT_EQ(c->routing.starvation_window, 50);
  EXPECT_DOUBLE_EQ(c->routing.balance_weight, kDefaultBalanceWeight);
  EXPECT_DOUBLE_EQ(c->train.weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(c->train.clip, 1.0);
  EXPECT_EQ(c->train.device, "auto");
  EXPECT_EQ(c->parallel.dp, 1);
  EXPECT_EQ(c->telemetry.every, 1);
}

TEST(JobConfig, SetOverridesAnyKeyInOrder) {
  auto c = parse_job_config(kBase, {"train.steps=99", "model.layout=TDTD", "routing.balance_weight=0.5",
                                    "train.steps=7"});
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->train.steps, 7);
  EXPECT_EQ(c->model.layout, "TDTD");
  EXPECT_DOUBLE_EQ(c->routing.balance_weight, 0.5);
}

TEST(JobConfig, RejectsUnknownKeysWrongTypesAndInconsistencyNamingTheKey) {
  EXPECT_THAT(error_of(std::string(kBase) + "optimizer: {lr: 1}\n"), HasSubstr("optimizer: unknown section"));
  EXPECT_THAT(error_of(kBase, {"train.stepz=3"}), HasSubstr("train.stepz: unknown key"));
  EXPECT_THAT(error_of(kBase, {"train.steps=many"}), HasSubstr("train.steps: expected an integer"));
  EXPECT_THAT(error_of(kBase, {"train.lr=fast"}), HasSubstr("train.lr: expected a number"));
  EXPECT_THAT(error_of(kBase, {"model.n_heads=5"}), HasSubstr("model.n_heads"));
  EXPECT_THAT(error_of(kBase, {"model.n_kv_heads=3"}), HasSubstr("model.n_kv_heads"));
  EXPECT_THAT(error_of(kBase, {"train.global_batch=5"}), HasSubstr("train.global_batch"));
  EXPECT_THAT(error_of(kBase, {"parallel.dp=2", "train.global_batch=6"}), HasSubstr("train.global_batch"));
  EXPECT_THAT(error_of(kBase, {"parallel.tp=3"}), HasSubstr("parallel.tp: 3 does not divide model.n_heads 4"));
  EXPECT_THAT(error_of(kBase, {"model.layout=TTT"}), HasSubstr("model.layout"));
  EXPECT_THAT(error_of(kBase, {"model.layout=TTXT"}), HasSubstr("model.layout"));
  EXPECT_THAT(error_of(kBase, {"train.device=tpu"}), HasSubstr("train.device"));
  EXPECT_THAT(error_of(kBase, {"notakey"}), HasSubstr("section.key=value"));
  EXPECT_THAT(error_of("model: [1, 2\n"), HasSubstr("YAML syntax error"));
}

TEST(JobConfig, AMissingRequiredKeyReadsAsMissingNotAsARangeError) {
  EXPECT_EQ(error_of("model: {d_model: 64, n_heads: 4, n_kv_heads: 2, d_ff: 128, seq_len: 32}\n"
                     "train: {steps: 10, micro_batch: 2, global_batch: 4}\ndata: {path: /tmp/x}\n"),
            "model.n_layers: missing (a required key; docs/config.md lists them)");
  EXPECT_EQ(error_of("model: {d_model: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, d_ff: 128, seq_len: 32}\n"
                     "train: {steps: 10, micro_batch: 2, global_batch: 4}\n"),
            "data.path: missing (a required key; docs/config.md lists them)");
  // --set supplies a key as well as the file does.
  auto c = parse_job_config("model: {d_model: 64, n_heads: 4, n_kv_heads: 2, d_ff: 128, seq_len: 32}\n"
                            "train: {steps: 10, micro_batch: 2, global_batch: 4}\ndata: {path: /tmp/x}\n",
                            {"model.n_layers=4"});
  EXPECT_TRUE(c.ok()) << c.status().message();
}

TEST(JobConfig, DuplicateKeysAndSectionsAreRefusedNotLastOneWins) {
  EXPECT_EQ(error_of(std::string(kBase) + "checkpoint: {every: 5, every: 7}\n"),
            "checkpoint.every: key given twice (keep one)");
  EXPECT_EQ(error_of(std::string(kBase) + "checkpoint:\n  every: 5\n  keep: 2\n  every: 7\n"),
            "checkpoint.every: key given twice (keep one)");
  EXPECT_EQ(error_of(std::string(kBase) + "train: {lr: 1.0e-3}\n"),
            "train: section given twice (merge the two into one)");
}

TEST(JobConfig, ValuesTheRunCannotMeanAreExplained) {
  EXPECT_EQ(error_of(kBase, {"train.seed=-1"}), "train.seed: expected a non-negative integer, got '-1'");
  EXPECT_EQ(error_of(kBase, {"train.warmup_steps=11"}),
            "train.warmup_steps: 11 is more than train.steps 10 (the learning rate would never reach train.lr)");
  EXPECT_TRUE(parse_job_config(kBase, {"train.warmup_steps=10"}).ok());
}

TEST(JobConfig, ConfigYamlWritesNumbersAsAPersonWouldWriteThem) {
  auto c = parse_job_config(kBase, {"train.lr=3e-3", "train.min_lr=0.0003", "routing.sparsity_weight=8e-4"});
  ASSERT_TRUE(c.ok()) << c.status().message();
  const std::string yaml = to_yaml(*c);
  // std::to_chars' shortest round-trip form: 0.003 and 8e-04 read back as the same doubles.
  EXPECT_THAT(yaml, HasSubstr("  lr: 0.003\n"));
  EXPECT_THAT(yaml, HasSubstr("  min_lr: 3e-04\n"));
  EXPECT_THAT(yaml, HasSubstr("  sparsity_weight: 8e-04\n"));
  EXPECT_THAT(yaml, HasSubstr("  norm_eps: 1e-05\n"));
  EXPECT_THAT(yaml, ::testing::Not(HasSubstr("0000000")));
}

TEST(JobConfig, ResolvedYamlRoundTrips) {
  auto c = parse_job_config(kBase, {"train.lr=0.00123456789", "routing.balance_weight=0.25", "train.seed=18446744073709551615"});
  ASSERT_TRUE(c.ok());
  const std::string yaml = to_yaml(*c);
  auto again = parse_job_config(yaml);
  ASSERT_TRUE(again.ok()) << again.status().message() << "\n" << yaml;
  EXPECT_EQ(to_yaml(*again), yaml);
  EXPECT_DOUBLE_EQ(again->train.lr, 0.00123456789);
  EXPECT_EQ(again->train.seed, 18446744073709551615ull);
}

}  // namespace
}  // namespace dtrn::train
