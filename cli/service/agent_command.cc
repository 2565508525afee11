// `dtrn agent`: starts and stops workers on this host for a coordinator (coordinator/agent.h).
#include <atomic>
#include <iostream>
#include <thread>

#include "dtrn/coordinator/agent.h"
#include "service_commands.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn agent [--coordinator ADDR] [--slots N] [--host NAME] [--work-dir DIR] [--auth-token-file F]\n"
    "                  [--tls-ca F] [--stop-grace S]\n";
constexpr char kHelp[] =
    "\nOne per host: registers N worker slots with the coordinator and runs the workers it is given\n"
    "(`dtrn train` processes), reporting their exits. Workers stop with the agent.\n\n"
    "  --slots N              workers this host runs at once (default 1; GPUs on a GPU host)\n"
    "  --host NAME            the name reported to the coordinator (default: the host name)\n"
    "  --work-dir DIR         worker configs and logs (default agent/)\n"
    "  --stop-grace S         seconds a stopped worker has to save its checkpoint after SIGTERM before\n"
    "                         SIGKILL (default 30)\n";

}  // namespace

int run_agent(int argc, char** argv) {
  auto specs = client_flag_specs();
  for (const char* f : {"slots", "host", "work-dir", "stop-grace"}) specs.push_back({f});
  specs.push_back({"help", false});
  auto args = Args::Parse(argc, argv, 2, specs);
  if (!args.ok()) return usage_error("agent", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp << kClientFlagsHelp;
    return 0;
  }
  auto client = client_options(*args);
  if (!client.ok()) return fail("agent", client.status().message());
  auto slots = args->get_int("slots", 1);
  if (!slots.ok()) return fail("agent", slots.status().message());
  coordinator::AgentOptions o;
  o.coordinator = *client;
  o.slots = static_cast<int>(*slots);
  o.host = args->get_or("host", "");
  o.work_dir = args->get_or("work-dir", o.work_dir);
  auto grace = args->get_int("stop-grace", static_cast<long long>(o.stop_grace_s));
  if (!grace.ok()) return fail("agent", grace.status().message());
  o.stop_grace_s = static_cast<double>(*grace);
  block_termination_signals();
  std::atomic<bool> stop{false};
  std::thread signals([&] {
    wait_for_termination_signal();
    stop = true;
  });
  signals.detach();
  const Status s = coordinator::run_agent(o, &stop);
  if (!s.ok()) return fail("agent", s.message());
  return 0;
}

}  // namespace dtrn::cli
