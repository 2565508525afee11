// `dtrn launch`: the torchrun-like local launcher. Runs a job on this machine through a coordinator:
// an embedded one plus an agent with N slots when --coordinator is not given, so one command runs a
// multi-process job with restarts from checkpoints and live telemetry.
#include <atomic>
#include <ctime>
#include <iostream>
#include <thread>

#include "dtrn/coordinator/agent.h"
#include "dtrn/coordinator/server.h"
#include "dtrn/train/job_config.h"
#include "dtrn/v1/coordinator.grpc.pb.h"
#include "service_commands.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn launch --config JOB.yaml --nproc N [--set KEY=VALUE ...] [--run-dir DIR] [--max-restarts N]\n"
    "                   [--state-dir DIR] [--metrics-listen ADDR] [--heartbeat-timeout S]\n"
    "                   [--coordinator ADDR [--auth-token-file F] [--tls-ca F]]\n";
constexpr char kHelp[] =
    "\nRuns a job of parallel.dp x parallel.tp ranks as local worker processes, restarting them from the\n"
    "last checkpoint when one fails, and follows it to its end (exit 0 only if it succeeded).\n\n"
    "  --nproc N              worker slots on this machine (at least dp x tp); the ranks of a job form\n"
    "                         one group, started with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and\n"
    "                         MASTER_PORT as torchrun does (docs/coordinator.md)\n"
    "  --max-restarts N       default 3\n"
    "  --state-dir DIR        the embedded coordinator's state (default runs/launch-<date-time>)\n"
    "  --metrics-listen ADDR  the embedded coordinator's /metrics and dashboard (default 127.0.0.1:0, any\n"
    "                         free port)\n"
    "  --heartbeat-timeout S  the embedded coordinator's failure detection (default 10)\n"
    "  --coordinator ADDR     use this coordinator instead of an embedded one; its agents run the job\n";

std::string default_state_dir() {
  const std::time_t now = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "runs/launch-%Y%m%d-%H%M%S", std::localtime(&now));
  return buf;
}

}  // namespace

int run_launch(int argc, char** argv) {
  auto specs = client_flag_specs();
  for (const char* f : {"config", "nproc", "run-dir", "max-restarts", "state-dir", "metrics-listen", "heartbeat-timeout"}) {
    specs.push_back({f});
  }
  specs.push_back({"set", true, true});
  specs.push_back({"help", false});
  auto args = Args::Parse(argc, argv, 2, specs);
  if (!args.ok()) return usage_error("launch", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp << kClientFlagsHelp;
    return 0;
  }
  if (!args->has("config")) return usage_error("launch", "--config is required");
  auto config = train::load_job_config(*args->get("config"), args->all("set"));
  if (!config.ok()) return fail("launch", config.status().message());
  auto nproc = args->get_int("nproc", 1);
  auto restarts = args->get_int("max-restarts", 3);
  if (!nproc.ok() || !restarts.ok()) return fail("launch", (!nproc.ok() ? nproc : restarts).status().message());
  const int64_t world = config->parallel.dp * config->parallel.tp;
  if (*nproc < world) {
    return fail("launch", "--nproc " + std::to_string(*nproc) + " is fewer than the job's dp x tp = " +
                              std::to_string(world) + " ranks");
  }
  auto client = client_options(*args);
  if (!client.ok()) return fail("launch", client.status().message());

  block_termination_signals();
  std::unique_ptr<coordinator::CoordinatorServer> server;
  std::atomic<bool> stop_agent{false};
  std::thread agent;
  if (!args->has("coordinator")) {
    coordinator::ServerOptions o;
    o.coordinator.state_dir = args->get_or("state-dir", default_state_dir());
    o.listen = "127.0.0.1:0";
    o.metrics_listen = args->get_or("metrics-listen", "127.0.0.1:0");
    try {
      o.coordinator.heartbeat_timeout_s = std::stod(args->get_or("heartbeat-timeout", "10"));
    } catch (const std::exception&) {
      return usage_error("launch", "--heartbeat-timeout takes seconds");
    }
    auto started = coordinator::CoordinatorServer::Start(o);
    if (!started.ok()) return fail("launch", started.status().message());
    server = std::move(*started);
    client->address = "127.0.0.1:" + std::to_string(server->port());
    std::cout << "launch: coordinator " << client->address << ", state in " << o.coordinator.state_dir << "\n"
              << "launch: dashboard http://127.0.0.1:" << server->metrics_port() << "/   metrics http://127.0.0.1:"
              << server->metrics_port() << "/metrics\n"
              << "launch: live view: dtrn top --coordinator " << client->address << std::endl;
    coordinator::AgentOptions a;
    a.coordinator = *client;
    a.slots = static_cast<int>(*nproc);
    a.host = "localhost";
    a.work_dir = o.coordinator.state_dir + "/agent";
    agent = std::thread([a, &stop_agent] { (void)coordinator::run_agent(a, &stop_agent); });
  }

  v1::JobSpec spec;
  spec.set_name(*args->get("config"));
  spec.set_config_yaml(train::to_yaml(*config));
  spec.set_max_restarts(static_cast<int32_t>(*restarts));
  spec.set_run_dir(args->get_or("run-dir", ""));
  auto job_id = submit_job(*client, spec);
  int code = 1;
  if (!job_id.ok()) {
    std::cerr << "dtrn launch: " << job_id.status().message() << "\n";
  } else {
    std::cout << "launch: job " << *job_id << std::endl;
    // Ctrl-C cancels the job; following it then ends with CANCELLED.
    std::thread canceller([c = *client, id = *job_id] {
      wait_for_termination_signal();
      auto channel = coordinator::make_channel(c);
      if (!channel.ok()) return;
      grpc::ClientContext context;
      coordinator::prepare_context(&context, c, 5);
      v1::CancelJobRequest request;
      request.set_job_id(id);
      v1::Job job;
      (void)v1::Jobs::NewStub(*channel)->CancelJob(&context, request, &job);
    });
    canceller.detach();
    std::string error;
    const v1::JobState state = follow_job(*client, *job_id, 1, &error);
    if (state == v1::JOB_STATE_UNSPECIFIED) std::cerr << "dtrn launch: lost the job's events: " << error << "\n";
    auto job = server ? server->coordinator().get(*job_id) : StatusOr<v1::Job>(Status::NotFound(""));
    if (job.ok()) std::cout << "launch: job " << *job_id << " " << coordinator::state_name(state) << ", run directory "
                            << job->run_dir() << std::endl;
    code = state == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
  }
  stop_agent = true;
  if (agent.joinable()) agent.join();
  if (server) server->shutdown();
  return code;
}

}  // namespace dtrn::cli
