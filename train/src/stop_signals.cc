#include "stop_signals.h"

#include <unistd.h>

#include <atomic>

namespace dtrn::train {
namespace {

// Written by the handler only; lock-free, so async-signal-safe.
std::atomic<int> g_received{0};
static_assert(std::atomic<int>::is_always_lock_free);

void write_stderr(const char* text) {
  size_t n = 0;
  while (text[n] != '\0') ++n;
  // Nothing to do about a failed write inside a signal handler.
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, text, n);
}

void on_signal(int signal) {
  int expected = 0;
  if (g_received.compare_exchange_strong(expected, signal)) {
    write_stderr(signal == SIGTERM
                     ? "dtrn train: SIGTERM: finishing this step, then saving a checkpoint "
                       "(a second signal stops at once)\n"
                     : "dtrn train: SIGINT: finishing this step, then saving a checkpoint "
                       "(a second signal stops at once)\n");
    return;
  }
  // The second signal: the default action, now.
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

}  // namespace

StopSignals::StopSignals() {
  g_received.store(0);
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads and writes in progress carry on
  sigaction(SIGTERM, &action, &previous_term_);
  sigaction(SIGINT, &action, &previous_int_);
}

StopSignals::~StopSignals() {
  sigaction(SIGTERM, &previous_term_, nullptr);
  sigaction(SIGINT, &previous_int_, nullptr);
}

int StopSignals::received() const { return g_received.load(); }

const char* StopSignals::name(int signal) { return signal == SIGTERM ? "SIGTERM" : "SIGINT"; }

}  // namespace dtrn::train
