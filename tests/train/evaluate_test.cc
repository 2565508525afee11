// evaluate_tokens reports its progress once per forward, against a total it knows in advance, so that
// `dtrn eval` can show how far a long evaluation is; the progress changes nothing it computes.
#include "dtrn/train/evaluate.h"

#include <gtest/gtest.h>

#include <vector>

#include "tiny_model.h"

namespace dtrn::train {
namespace {

model::ModelConfig tiny() { return tiny_model(2, "TD", /*seq_len=*/4); }

TEST(EvaluateProgress, OneCallPerForwardAgainstTheTotalItWillRun) {
  model::DtrnModel m(tiny(), model::RoutingConfig{}, Device::cpu(), DType::kF32);
  m.init(1);
  std::vector<int32_t> tokens(100);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 7 % 30);
  // 99 predictions: 24 full windows of T = 4 in batches of 2 (12 forwards), then 3 left for a last,
  // shorter window (1 forward): 13.
  std::vector<std::pair<int64_t, int64_t>> calls;
  auto record = [&](int64_t done, int64_t total) { calls.emplace_back(done, total); };
  EvalResult with = evaluate_tokens(m, tokens, 2, 0, 0, record);
  ASSERT_EQ(calls.size(), 13u);
  for (size_t i = 0; i < calls.size(); ++i) EXPECT_EQ(calls[i], std::make_pair(int64_t(i + 1), int64_t(13)));
  EXPECT_EQ(with.tokens, 99);
  EvalResult without = evaluate_tokens(m, tokens, 2, 0, 0);
  EXPECT_EQ(with.loss, without.loss);

  calls.clear();
  evaluate_tokens(m, tokens, 2, 5, 0, record);
  ASSERT_EQ(calls.size(), 5u);
  EXPECT_EQ(calls.back(), std::make_pair(int64_t(5), int64_t(5)));
}

}  // namespace
}  // namespace dtrn::train
