// SIGTERM and SIGINT as a request to stop after the current step (Note [Pre-emption]).
//
// Note [Pre-emption]
// Slurm and Kubernetes send SIGTERM some seconds before they kill a job (Slurm: --signal or KillWait,
// Kubernetes: terminationGracePeriodSeconds); Ctrl-C sends SIGINT. The first of either makes the trainer
// finish the step in progress, save a checkpoint (unless that step was just saved), print where it is and
// exit with kExitStopped (trainer.h: 75, EX_TEMPFAIL, "try again later"), so a job script can tell "pre-empted, resume
// me" from success (0) and failure (1). A second signal ends the process at once with the default action
// (the shell then reports 128 + the signal: 143 or 130); a checkpoint being written at that moment has no
// manifest yet, so no reader takes it for a checkpoint and nothing already saved is lost.
//
// One StopSignals object at a time per process; it installs the handlers in its constructor and puts the
// previous ones back in its destructor. received() may be called from any thread.
#pragma once

#include <csignal>

namespace dtrn::train {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // 0 while no signal came; else the first one's number (SIGTERM or SIGINT).
  int received() const;
  // "SIGTERM" or "SIGINT".
  static const char* name(int signal);

 private:
  struct sigaction previous_term_, previous_int_;
};

}  // namespace dtrn::train
