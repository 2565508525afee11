// The Prometheus exposition (coordinator/metrics.h) against the text format 0.0.4 written out by hand,
// and against the real promtool from Debian's prometheus package where it is installed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>

#include "dtrn/coordinator/metrics.h"
#include "process_util.h"

namespace dtrn::coordinator {
namespace {

TEST(MetricsTest, CountersGaugesAndHistogramsInTextFormat004) {
  Registry r;
  auto& rejected = r.add_counter("dtrn_rpc_rejected_total", "RPCs refused");
  rejected.add({{"reason", "unauthenticated"}}).inc();
  rejected.add({{"reason", "unauthenticated"}}).inc(2);
  auto& f = r.add_gauge("dtrn_layer_routed_fraction", "Routed fraction");
  f.add({{"job", "job-1"}, {"layer", "2"}}).set(0.125);
  f.add({{"job", "job-1"}, {"layer", "4"}}).set(std::numeric_limits<double>::quiet_NaN());
  auto& h = r.add_histogram("dtrn_step_duration_seconds", "Step time");
  auto& rank0 = h.add({{"rank", "0"}}, {0.1, 1});
  rank0.observe(0.05);
  rank0.observe(0.1);  // le is inclusive
  rank0.observe(3);
  r.add_gauge("dtrn_unused", "no metrics: not written");
  const std::string expected =
      "# HELP dtrn_rpc_rejected_total RPCs refused\n"
      "# TYPE dtrn_rpc_rejected_total counter\n"
      "dtrn_rpc_rejected_total{reason=\"unauthenticated\"} 3\n"
      "# HELP dtrn_layer_routed_fraction Routed fraction\n"
      "# TYPE dtrn_layer_routed_fraction gauge\n"
      "dtrn_layer_routed_fraction{job=\"job-1\",layer=\"2\"} 0.125\n"
      "dtrn_layer_routed_fraction{job=\"job-1\",layer=\"4\"} NaN\n"
      "# HELP dtrn_step_duration_seconds Step time\n"
      "# TYPE dtrn_step_duration_seconds histogram\n"
      "dtrn_step_duration_seconds_bucket{rank=\"0\",le=\"0.1\"} 2\n"
      "dtrn_step_duration_seconds_bucket{rank=\"0\",le=\"1\"} 2\n"
      "dtrn_step_duration_seconds_bucket{rank=\"0\",le=\"+Inf\"} 3\n"
      "dtrn_step_duration_seconds_sum{rank=\"0\"} 3.15\n"
      "dtrn_step_duration_seconds_count{rank=\"0\"} 3\n";
  EXPECT_EQ(r.serialize(), expected);
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  Registry r;
  r.add_gauge("g", "a \\ b\nc").add({{"name", "say \"hi\"\\\n"}}).set(1);
  EXPECT_EQ(r.serialize(),
            "# HELP g a \\\\ b\\nc\n# TYPE g gauge\ng{name=\"say \\\"hi\\\"\\\\\\n\"} 1\n");
}

TEST(MetricsTest, RemovedLabelSetsDisappear) {
  Registry r;
  auto& g = r.add_gauge("g", "h");
  g.add({{"job", "a"}}).set(1);
  g.add({{"job", "b"}}).set(2);
  g.remove({{"job", "a"}});
  EXPECT_EQ(r.serialize(), "# HELP g h\n# TYPE g gauge\ng{job=\"b\"} 2\n");
}

TEST(MetricsTest, PromtoolAcceptsTheExposition) {
  const std::string promtool = testing::find_binary("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus; deploy/install_deps.sh)";
  Registry r;
  r.add_counter("dtrn_layer_fallback_total", "Fallbacks").add({{"job", "j"}, {"layer", "2"}}).inc();
  r.add_gauge("dtrn_train_loss", "Loss").add({{"job", "j"}}).set(3.5);
  r.add_histogram("dtrn_step_duration_seconds", "Step time").add({{"rank", "0"}}, {0.1, 1}).observe(0.2);
  const std::string path = testing::temp_path("exposition.txt");
  std::ofstream(path) << r.serialize();
  const testing::CommandResult run = testing::run_command({promtool, "check", "metrics"}, path);
  EXPECT_EQ(run.code, 0) << run.output;
  // promtool's linter names problems on its output; a clean exposition has none.
  EXPECT_EQ(run.output.find("counter metrics should have \"_total\" suffix"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace dtrn::coordinator
