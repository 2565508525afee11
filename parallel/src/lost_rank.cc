#include "dtrn/parallel/lost_rank.h"

#include <cstdio>
#include <cstdlib>

#include "dtrn/parallel/tcp_store.h"

namespace dtrn::parallel {

void exit_lost_rank(int rank, const std::string& what, const std::vector<int>& lost, double waited_s) {
  std::string line = "dtrn: rank " + std::to_string(rank) + ": ";
  if (lost.empty()) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "no progress after %.0f s (parallel.timeout_s) ", waited_s);
    line += std::string(buf) + "in " + what + ": a rank of the group hangs; exiting";
  } else {
    line += lost.size() == 1 ? "lost rank " : "lost ranks ";
    for (size_t i = 0; i < lost.size(); ++i) {
      if (i > 0) line += ',';
      line += std::to_string(lost[i]);
    }
    line += " (the process ended: killed, crashed or stopped by its own error) while waiting in " + what +
            "; exiting";
  }
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  // _Exit: no static destructors, which could block on the half-done collective (MPI_Finalize would).
  std::_Exit(kExitLostRank);
}

void Liveness::check(const std::string& what, std::chrono::steady_clock::time_point started) {
  using std::chrono::steady_clock;
  const auto now = steady_clock::now();
  const double waited = std::chrono::duration<double>(now - started).count();
  if (store_ != nullptr && waited > 0.2) {
    std::lock_guard<std::mutex> lock(mu_);
    if (now - last_asked_ > std::chrono::milliseconds(500)) {
      last_asked_ = now;
      const bool was_gone = !left_.empty();
      const TcpStore::Gone gone = store_->gone_ranks();
      if (lost_.empty() && !gone.lost.empty()) lost_since_ = now;
      lost_ = gone.lost;
      left_ = gone.left;
      if (!was_gone && !left_.empty()) left_since_ = now;
    }
    // A rank may end just after its part of the collective this one still waits for (an NCCL kernel
    // finishes microseconds apart on two GPUs, and the watchdog looks every 100 ms): a wait that goes on
    // a second after the store reported the loss is lost.
    if (!lost_.empty() && now - lost_since_ > std::chrono::seconds(1)) exit_lost_rank(rank_, what, lost_, waited);
    if (!left_.empty() && now - left_since_ > std::chrono::seconds(2)) exit_lost_rank(rank_, what, left_, waited);
  }
  if (waited > timeout_s_) exit_lost_rank(rank_, what, {}, waited);
}

}  // namespace dtrn::parallel
