// Orderly shutdown of the long-running subcommands on SIGINT / SIGTERM (service_commands.h).
#include <signal.h>

#include "service_commands.h"

namespace dtrn::cli {
namespace {

sigset_t termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void block_termination_signals() {
  const sigset_t set = termination_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int wait_for_termination_signal() {
  const sigset_t set = termination_signals();
  int signal = 0;
  sigwait(&set, &signal);
  return signal;
}

}  // namespace dtrn::cli
