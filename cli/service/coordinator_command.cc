// `dtrn coordinator`: the service (coordinator/server.h) until SIGINT or SIGTERM.
#include <iostream>

#include "dtrn/coordinator/server.h"
#include "service_commands.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn coordinator --state-dir DIR [--listen ADDR] [--metrics-listen ADDR] [--auth-token-file F]\n"
    "                        [--tls-cert F --tls-key F] [--heartbeat-timeout S] [--backoff S]\n";
constexpr char kHelp[] =
    "\nSchedules jobs onto agents, watches their workers and restarts failed generations from the last\n"
    "checkpoint; exports per-layer routing telemetry to Prometheus and the dashboard (docs/coordinator.md).\n\n"
    "  --state-dir DIR         jobs, job logs and default run directories; a restarted coordinator\n"
    "                          recovers its jobs from here\n"
    "  --listen ADDR           gRPC host:port (default 127.0.0.1:50051; beyond loopback needs a token)\n"
    "  --metrics-listen ADDR   HTTP host:port for /metrics and the dashboard (default 127.0.0.1:9464;\n"
    "                          'off' for none)\n"
    "  --auth-token-file F     require 'authorization: Bearer <first line of F>' on every RPC\n"
    "  --tls-cert F, --tls-key F   serve gRPC over TLS with this PEM certificate and key\n"
    "  --heartbeat-timeout S   a worker or agent silent this many seconds has failed (default 10)\n"
    "  --backoff S             first restart's back-off, doubling per restart up to 30 s (default 1)\n";

}  // namespace

int run_coordinator(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2,
                          {{"state-dir"}, {"listen"}, {"metrics-listen"}, {"auth-token-file"}, {"tls-cert"},
                           {"tls-key"}, {"heartbeat-timeout"}, {"backoff"}, {"help", false}});
  if (!args.ok()) return usage_error("coordinator", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (!args->has("state-dir")) return usage_error("coordinator", "--state-dir is required");
  coordinator::ServerOptions o;
  o.coordinator.state_dir = *args->get("state-dir");
  o.listen = args->get_or("listen", o.listen);
  o.metrics_listen = args->get_or("metrics-listen", o.metrics_listen);
  if (o.metrics_listen == "off") o.metrics_listen.clear();
  o.tls_cert_file = args->get_or("tls-cert", "");
  o.tls_key_file = args->get_or("tls-key", "");
  try {
    o.coordinator.heartbeat_timeout_s = std::stod(args->get_or("heartbeat-timeout", "10"));
    o.coordinator.backoff_initial_s = std::stod(args->get_or("backoff", "1"));
  } catch (const std::exception&) {
    return usage_error("coordinator", "--heartbeat-timeout and --backoff take seconds");
  }
  if (auto f = args->get("auth-token-file")) {
    auto token = coordinator::read_token_file(*f);
    if (!token.ok()) return fail("coordinator", "--auth-token-file: " + token.status().message());
    o.auth_token = *token;
  }
  block_termination_signals();
  auto server = coordinator::CoordinatorServer::Start(o);
  if (!server.ok()) return fail("coordinator", server.status().message());
  std::cout << "coordinator: listening on " << o.listen.substr(0, o.listen.rfind(':')) << ":" << (*server)->port()
            << (o.tls_cert_file.empty() ? "" : " (TLS)") << ", state in " << o.coordinator.state_dir << std::endl;
  if ((*server)->metrics_port() > 0) {
    const std::string host = o.metrics_listen.substr(0, o.metrics_listen.rfind(':'));
    std::cout << "coordinator: dashboard http://" << host << ":" << (*server)->metrics_port()
              << "/  metrics http://" << host << ":" << (*server)->metrics_port() << "/metrics" << std::endl;
  }
  const int signal = wait_for_termination_signal();
  std::cout << "coordinator: signal " << signal << ", shutting down" << std::endl;
  (*server)->shutdown();
  return 0;
}

}  // namespace dtrn::cli
