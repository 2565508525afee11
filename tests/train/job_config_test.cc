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
  EXPECT_THAT(error_of(kBase, {"parallel.tp=3"}), HasSubstr("parallel.tp"));
  EXPECT_THAT(error_of(kBase, {"model.layout=TTT"}), HasSubstr("model.layout"));
  EXPECT_THAT(error_of(kBase, {"model.layout=TTXT"}), HasSubstr("model.layout"));
  EXPECT_THAT(error_of(kBase, {"train.device=tpu"}), HasSubstr("train.device"));
  EXPECT_THAT(error_of(kBase, {"notakey"}), HasSubstr("section.key=value"));
  EXPECT_THAT(error_of("model: [1, 2\n"), HasSubstr("YAML syntax error"));
  EXPECT_THAT(error_of("model: {d_model: 64}\n"), HasSubstr("model.n_layers"));
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
