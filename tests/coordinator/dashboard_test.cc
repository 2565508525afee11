// The live views of a running job: the coordinator's dashboard page rendered by a real headless Chromium
// (a screenshot is kept in <build>/test-artifacts/), and `dtrn top` running in a real tmux.
#include <signal.h>

#include "cluster.h"

namespace dtrn::coordinator::testing {
namespace {

std::string artifacts_dir() {
  const fs::path dir = fs::path(kDtrn).parent_path().parent_path() / "test-artifacts";
  fs::create_directories(dir);
  return dir.string();
}

class LiveViewTest : public ClusterTest {
 protected:
  // A job long enough (200 steps) to be running while it is looked at; cancelled by the test.
  std::string start_running_job() {
    start_coordinator();
    start_agent();
    const std::string id = submit(200, dir("run"));
    EXPECT_TRUE(eventually([&] { return get(id).step() >= 5; }, 120)) << get(id).DebugString();
    return id;
  }
  void cancel(const std::string& id) {
    v1::CancelJobRequest r;
    r.set_job_id(id);
    v1::Job job;
    grpc::ClientContext c;
    prepare_context(&c, client_, 5);
    EXPECT_TRUE(jobs()->CancelJob(&c, r, &job).ok());
    EXPECT_TRUE(wait_state(id, v1::JOB_STATE_CANCELLED, 5));
  }
};

TEST_F(LiveViewTest, DashboardShowsPerLayerRoutingInHeadlessChromium) {
  const std::string chromium = find_binary("chromium");
  if (chromium.empty()) GTEST_SKIP() << "chromium not installed (Debian package chromium; deploy/install_deps.sh)";
  const std::string id = start_running_job();
  const std::string url = "http://127.0.0.1:" + std::to_string(metrics_port_) + "/";
  const std::vector<std::string> common = {chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                           "--user-data-dir=" + dir("chromium"), "--window-size=1400,900",
                                           "--virtual-time-budget=4000"};
  std::vector<std::string> dump = common;
  dump.insert(dump.end(), {"--dump-dom", url});
  const CommandResult dom = run_command(dump);
  ASSERT_EQ(dom.code, 0) << dom.output;
  // The page's script ran against the live coordinator: the job, its D layer with a routed fraction,
  // and its running worker.
  EXPECT_NE(dom.output.find("<option>" + id + "</option>"), std::string::npos) << dom.output;
  EXPECT_NE(dom.output.find("data-layer=\"1\""), std::string::npos) << dom.output;
  EXPECT_NE(dom.output.find("layer 1: f 0."), std::string::npos) << dom.output;
  EXPECT_NE(dom.output.find("<td>test-host</td><td>running</td>"), std::string::npos) << dom.output;
  const std::string png = artifacts_dir() + "/dashboard.png";
  fs::remove(png);
  std::vector<std::string> shot = common;
  shot.insert(shot.end(), {"--screenshot=" + png, url});
  const CommandResult r = run_command(shot);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_TRUE(fs::exists(png));
  EXPECT_EQ(slurp(png).substr(1, 3), "PNG");
  EXPECT_GT(fs::file_size(png), 20000u);  // a drawn page, not a blank one (a blank 1400x900 PNG is ~5 KB)
  std::printf("[ artefact ] %s\n", png.c_str());
  cancel(id);
}

TEST_F(LiveViewTest, DtrnTopShowsPerLayerRoutingUnderTmux) {
  const std::string tmux = find_binary("tmux");
  if (tmux.empty()) GTEST_SKIP() << "tmux not installed (Debian package tmux; deploy/install_deps.sh)";
  const std::string id = start_running_job();
  const std::string socket = "dtrn-test-" + std::to_string(::getpid());
  const CommandResult started =
      run_command({tmux, "-L", socket, "new-session", "-d", "-s", "top", "-x", "150", "-y", "40",
                   kDtrn + " top --coordinator " + client_.address + " --job " + id});
  ASSERT_EQ(started.code, 0) << started.output;
  std::string screen;
  // Two redraws apart: the step shown must advance while the job trains.
  const auto shown_step = [&] {
    screen = run_command({tmux, "-L", socket, "capture-pane", "-p", "-t", "top"}).output;
    const size_t at = screen.find("  step ");
    return at == std::string::npos ? -1 : std::atoi(screen.c_str() + at + 7);
  };
  int first = -1;
  EXPECT_TRUE(eventually([&] { return (first = shown_step()) >= 5 && screen.find("L1 ") != std::string::npos; }, 15))
      << screen;
  EXPECT_TRUE(eventually([&] { return shown_step() > first; }, 15)) << screen;
  run_command({tmux, "-L", socket, "kill-server"});
  std::ofstream(artifacts_dir() + "/dtrn-top.txt") << screen;
  EXPECT_NE(screen.find("dtrn top - " + id + " (running)"), std::string::npos) << screen;
  EXPECT_NE(screen.find("L1     ["), std::string::npos) << screen;
  EXPECT_NE(screen.find("test-host"), std::string::npos) << screen;
  cancel(id);
}

}  // namespace
}  // namespace dtrn::coordinator::testing
