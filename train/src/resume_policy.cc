#include "resume_policy.h"

#include <cstdio>
#include <map>
#include <set>

#include "dtrn/runtime/optim.h"

namespace dtrn::train {
namespace {

// The keys a resume may change; every other key is refused (see the Note in the header).
const std::set<std::string>& changeable_keys() {
  static const std::set<std::string> keys = {
      "train.steps",      "train.eval_every",  "train.eval_batches", "train.micro_batch", "train.device",
      "train.precision",  "checkpoint.every",  "checkpoint.keep",    "checkpoint.keep_every", "telemetry.every",
      // The data stream does not depend on how the ranks share the work, and a checkpoint loads into
      // any layout (docs/checkpoints.md, Resharding).
      "parallel.dp",      "parallel.tp",       "parallel.zero",      "parallel.bucket_mb", "parallel.timeout_s"};
  return keys;
}

std::string schedule_note(const JobConfig& saved, const JobConfig& now, int64_t step) {
  const TrainConfig& a = saved.train;
  const TrainConfig& b = now.train;
  const double before = lr_at(step, a.warmup_steps, a.steps, a.lr, a.min_lr);
  const double after = lr_at(step, b.warmup_steps, b.steps, b.lr, b.min_lr);
  char text[256];
  std::snprintf(text, sizeof text,
                "; the warm-up + cosine schedule is recomputed to end at step %lld: the learning rate at "
                "step %lld is %.3g (it was %.3g)",
                static_cast<long long>(b.steps), static_cast<long long>(step), after, before);
  return text;
}

}  // namespace

Status check_resume_config(const JobConfig& saved, const JobConfig& now, int64_t step,
                           std::vector<std::string>* changes) {
  const auto before = config_entries(saved);
  std::map<std::string, std::string> after;
  for (const auto& [key, value] : config_entries(now)) after[key] = value;
  for (const auto& [key, old_value] : before) {
    const std::string& new_value = after[key];
    if (new_value == old_value) continue;
    if (!changeable_keys().count(key)) {
      return Status::FailedPrecondition(
          "--resume: " + key + " is " + old_value + " in the checkpoint and " + new_value +
          " now; changing it changes what the checkpoint means, so a resume keeps it (start a new run "
          "for another value, e.g. from `dtrn export` weights with --init-from)");
    }
    std::string line = key + ": " + old_value + " -> " + new_value;
    if (key == "train.steps") line += schedule_note(saved, now, step);
    changes->push_back(line);
  }
  if (now.train.steps < step) {
    return Status::FailedPrecondition("--resume: train.steps " + std::to_string(now.train.steps) +
                                      " is below the checkpoint's step " + std::to_string(step));
  }
  return Status::Ok();
}

}  // namespace dtrn::train
