// deploy/prometheus against the real Prometheus of Debian's `prometheus` package: promtool accepts the
// config, the alert rules and their unit tests and the coordinator's live exposition; a Prometheus server
// scrapes a coordinator running a job and its HTTP API returns the per-layer series.
#include <cmath>

#include "cluster.h"

namespace dtrn::coordinator::testing {
namespace {

const std::string kDeploy = std::string(DTRN_SOURCE_DIR) + "/deploy/prometheus/";

using PrometheusTest = ClusterTest;

TEST_F(PrometheusTest, PromtoolAcceptsConfigRulesAndRuleUnitTests) {
  const std::string promtool = find_binary("promtool");
  if (promtool.empty()) GTEST_SKIP() << "promtool not installed (Debian package prometheus; deploy/install_deps.sh)";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"check", "config", kDeploy + "prometheus.yml"},
           {"check", "rules", kDeploy + "dtrn_rules.yml"},
           {"test", "rules", kDeploy + "dtrn_rules_test.yml"}}) {
    std::vector<std::string> argv = {promtool};
    argv.insert(argv.end(), args.begin(), args.end());
    const CommandResult r = run_command(argv);
    EXPECT_EQ(r.code, 0) << args[0] << " " << args[1] << ":\n" << r.output;
    EXPECT_NE(r.output.find("SUCCESS"), std::string::npos) << r.output;
  }
}

TEST_F(PrometheusTest, PrometheusScrapesThePerLayerSeriesOfAJob) {
  const std::string prometheus = find_binary("prometheus");
  const std::string promtool = find_binary("promtool");
  if (prometheus.empty() || promtool.empty()) {
    GTEST_SKIP() << "prometheus not installed (Debian package prometheus; deploy/install_deps.sh)";
  }
  start_coordinator();
  start_agent();
  const std::string id = submit(20, dir("run"));
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120)) << get(id).DebugString();

  // The live exposition passes promtool's parser and linter.
  const std::string exposition = dir("metrics.txt");
  std::ofstream(exposition) << metrics();
  const CommandResult check = run_command({promtool, "check", "metrics"}, exposition);
  EXPECT_EQ(check.code, 0) << check.output;

  // The shipped scrape config, pointed at this coordinator and scraping every second.
  std::string config = slurp(kDeploy + "prometheus.yml");
  config.replace(config.find("127.0.0.1:9464"), 14, "127.0.0.1:" + std::to_string(metrics_port_));
  config.replace(config.find("scrape_interval: 5s"), 19, "scrape_interval: 1s");
  config.replace(config.find("dtrn_rules.yml"), 14, kDeploy + "dtrn_rules.yml");
  std::ofstream(dir("prometheus.yml")) << config;
  const int port = free_port();
  Child server({prometheus, "--config.file=" + dir("prometheus.yml"), "--storage.tsdb.path=" + dir("tsdb"),
                "--web.listen-address=127.0.0.1:" + std::to_string(port)},
               dir("prometheus.log"));
  httplib::Client http("127.0.0.1", port);
  nlohmann::json result;
  const bool scraped = eventually(
      [&] {
        auto res = http.Get(("/api/v1/query?query=dtrn_layer_routed_fraction%7Bjob%3D%22" + id + "%22%7D").c_str());
        if (!res || res->status != 200) return false;
        result = nlohmann::json::parse(res->body, nullptr, false);
        return !result.is_discarded() && result["status"] == "success" && !result["data"]["result"].empty();
      },
      30);
  ASSERT_TRUE(scraped) << server.output();
  const auto& series = result["data"]["result"][0];
  EXPECT_EQ(series["metric"]["job"], id);  // honor_labels keeps dtrn's job label
  EXPECT_EQ(series["metric"]["layer"], "1");
  const double f = std::stod(series["value"][1].get<std::string>());
  EXPECT_DOUBLE_EQ(f, metric("dtrn_layer_routed_fraction{job=\"" + id + "\",layer=\"1\"}"));

  // Every query of the Grafana dashboard returns data for this job, once rates have two samples.
  const auto query = [&](const std::string& promql) {
    httplib::Params params = {{"query", promql}};
    auto res = http.Post("/api/v1/query", params);
    nlohmann::json j = res ? nlohmann::json::parse(res->body, nullptr, false) : nlohmann::json();
    return j.is_discarded() || j.is_null() ? nlohmann::json() : j;
  };
  ASSERT_TRUE(eventually(
      [&] {
        auto j = query("count_over_time(dtrn_job_step{job=\"" + id + "\"}[1m]) >= 3");
        return !j.is_null() && !j["data"]["result"].empty();
      },
      30));
  const auto dashboard = nlohmann::json::parse(slurp(std::string(DTRN_SOURCE_DIR) + "/deploy/grafana/dtrn.json"));
  int queries = 0;
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) {
      std::string expr = target["expr"];
      for (size_t at; (at = expr.find("$job")) != std::string::npos;) expr.replace(at, 4, id);
      const auto j = query(expr);
      ASSERT_FALSE(j.is_null()) << expr;
      EXPECT_EQ(j["status"], "success") << expr << ": " << j.dump();
      EXPECT_FALSE(j["data"]["result"].empty()) << panel["title"] << ": " << expr << " returned nothing";
      ++queries;
    }
  }
  EXPECT_EQ(queries, 16);
}

}  // namespace
}  // namespace dtrn::coordinator::testing
