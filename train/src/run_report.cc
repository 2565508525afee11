#include "run_report.h"

#include <cstdio>

namespace dtrn::train {

std::string format_duration(double seconds) {
  char buf[32];
  const long long s = static_cast<long long>(seconds + 0.5);
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  }
  return buf;
}

RunReport::RunReport(int64_t first_step, int64_t steps) : first_step_(first_step), steps_(steps) {}

double RunReport::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string RunReport::step_tail(int64_t step, double step_ms) const {
  const double elapsed = elapsed_s();
  const int64_t done = step - first_step_;
  const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(steps_ - step) : 0;
  char buf[96];
  std::snprintf(buf, sizeof buf, " %.1f ms | elapsed %s | eta %s", step_ms, format_duration(elapsed).c_str(),
                format_duration(eta).c_str());
  return buf;
}

void RunReport::validation(int64_t step, double loss) {
  last_val_ = loss;
  last_val_step_ = step;
  if (!best_val_ || loss < *best_val_) {
    best_val_ = loss;
    best_val_step_ = step;
  }
}

std::string RunReport::summary(int64_t step, int64_t tokens, const std::string& checkpoints_dir) const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "done: %lld steps (%lld in this process), %lld tokens, %s",
                static_cast<long long>(step), static_cast<long long>(step - first_step_),
                static_cast<long long>(tokens), format_duration(elapsed_s()).c_str());
  std::string text = buf;
  if (last_val_) {
    std::snprintf(buf, sizeof buf, "; validation loss %.4f at step %lld, best %.4f at step %lld", *last_val_,
                  static_cast<long long>(last_val_step_), *best_val_, static_cast<long long>(best_val_step_));
    text += buf;
  }
  return text + "; checkpoints in " + checkpoints_dir;
}

}  // namespace dtrn::train
