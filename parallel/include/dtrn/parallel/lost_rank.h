// Note [Lost ranks]
// A data- or tensor-parallel job is only as alive as its slowest rank: a collective waits for every rank
// of its group. When a rank dies (SIGKILL, OOM, a node lost) or hangs, every other rank must end within a
// bounded time with a message a person can act on, never wait forever. Two mechanisms cover the cases:
//   - death or exit: every rank keeps a TCP connection to the job's store (tcp_store.h) on rank 0; the
//     kernel closes a dead process's sockets, so the store learns at once which rank went away (killed,
//     or ended by an error it reported itself), and a rank waiting in a collective asks it while it waits
//     (a lost store means rank 0 is gone). A killed rank is acted on at once; a rank that ended on
//     purpose (said BYE) after a 2 s grace in which the collective may still complete: a rank that
//     finished the job's last collective and exited is no failure for the others still completing it;
//   - hang: a collective that has not completed after the communicator's timeout (parallel.timeout_s) ends
//     the wait whatever the store says.
// Either way the process prints one line naming its rank, the group, the collective (with its sequence
// number in that group, so the lines of several ranks can be matched) and the lost ranks, and exits with
// kExitLostRank. Exiting, rather than throwing, is deliberate: a collective left half-done cannot be
// cancelled portably (MPI has no abort for one communicator; NCCL's abort poisons the communicator), and
// the job restarts from its last checkpoint anyway.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

namespace dtrn::parallel {

class TcpStore;

// The exit status of a rank that ended because another rank was lost (EX_UNAVAILABLE).
inline constexpr int kExitLostRank = 69;

// Prints "dtrn: rank R: lost rank(s) ... while waiting in <what>" (or the timeout form when `lost` is
// empty) on stderr and exits with kExitLostRank.
[[noreturn]] void exit_lost_rank(int rank, const std::string& what, const std::vector<int>& lost,
                                 double waited_s);

// What a waiting collective consults; one per process, shared by all of its communicators.
// Thread-safety: check() may be called from several threads (an NCCL watchdog and the main thread).
class Liveness {
 public:
  Liveness(int world_rank, double timeout_s) : rank_(world_rank), timeout_s_(timeout_s) {}
  // The job's store (not owned; it must outlive every later check). Without one only the timeout acts.
  void attach(TcpStore* store) { store_ = store; }
  // Called repeatedly while `what` waits, since `started`: exits the process (exit_lost_rank) when the
  // store reports a lost rank or the wait has lasted timeout_s. Asks the store at most twice a second.
  void check(const std::string& what, std::chrono::steady_clock::time_point started);
  double timeout_s() const { return timeout_s_; }

 private:
  int rank_;
  double timeout_s_;
  TcpStore* store_ = nullptr;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_asked_{};
  std::vector<int> lost_;                               // ranks that ended without a goodbye, as last reported
  std::chrono::steady_clock::time_point lost_since_{};  // when the store first reported one
  std::vector<int> left_;                               // ranks that ended on purpose, as last reported
  std::chrono::steady_clock::time_point left_since_{};  // when the store first reported one
};

}  // namespace dtrn::parallel
