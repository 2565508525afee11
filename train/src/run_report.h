// The human side of a run's progress, torchrun / llm.c style: the tail of each step line (this step's
// time, the time since this process started training, and an ETA) and the summary printed at the end.
// Pure formatting over numbers the trainer passes in; one object per run, not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace dtrn::train {

// "42.0s", "3:07", "1:02:03" (h:mm:ss past an hour).
std::string format_duration(double seconds);

class RunReport {
 public:
  // Training starts now at `first_step` (0, or the resumed step) and ends at `steps`.
  RunReport(int64_t first_step, int64_t steps);

  // " 12.3 ms | elapsed 3:07 | eta 1:02:03" after `step` is done. The ETA assumes the remaining steps
  // take what the steps of this process took on average, validation and checkpoints included.
  std::string step_tail(int64_t step, double step_ms) const;
  void validation(int64_t step, double loss);
  // The closing lines: steps and tokens done, time, final and best validation loss, where the checkpoints
  // are.
  std::string summary(int64_t step, int64_t tokens, const std::string& checkpoints_dir) const;

 private:
  double elapsed_s() const;

  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int64_t first_step_, steps_;
  std::optional<double> last_val_, best_val_;
  int64_t last_val_step_ = 0, best_val_step_ = 0;
};

}  // namespace dtrn::train
