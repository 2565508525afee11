// The starvation monitor's state survives a checkpoint: a monitor restored from runs() flags exactly the
// steps the uninterrupted one flags (window 3: the third consecutive low step of a layer is "starved").
#include <gtest/gtest.h>

#include "dtrn/train/trainer.h"

namespace dtrn::train {
namespace {

TEST(StarvationMonitor, RestoredRunsFlagLikeTheUninterruptedMonitor) {
  const double threshold = 0.05;
  const int64_t window = 3;
  // Layer 1 starves from its first step; layer 3 saturates (f > 0.9) from its second.
  const std::vector<std::pair<double, double>> steps = {{0.01, 0.5}, {0.02, 0.95}, {0.01, 0.97},
                                                        {0.03, 0.99}, {0.5, 0.99}};
  StarvationMonitor whole(threshold, window);
  std::vector<StarvationMonitor::Verdict> want;
  for (const auto& [f1, f3] : steps) {
    want.push_back(whole.observe(1, f1, false));
    want.push_back(whole.observe(3, f3, false));
  }
  ASSERT_TRUE(want[4].starved) << "the third low step must flag, or the test checks nothing";
  // Cut after every step: observe up to it, save runs(), restore into a fresh monitor, go on.
  for (size_t cut = 1; cut < steps.size(); ++cut) {
    StarvationMonitor before(threshold, window);
    for (size_t s = 0; s < cut; ++s) {
      before.observe(1, steps[s].first, false);
      before.observe(3, steps[s].second, false);
    }
    StarvationMonitor after(threshold, window);
    after.restore(before.runs());
    for (size_t s = cut; s < steps.size(); ++s) {
      const auto v1 = after.observe(1, steps[s].first, false);
      const auto v3 = after.observe(3, steps[s].second, false);
      EXPECT_EQ(v1.starved, want[2 * s].starved) << "cut " << cut << " step " << s;
      EXPECT_EQ(v3.saturated, want[2 * s + 1].saturated) << "cut " << cut << " step " << s;
    }
  }
}

}  // namespace
}  // namespace dtrn::train
