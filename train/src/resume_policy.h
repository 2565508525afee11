// Which job-config keys `dtrn train --resume` may change (Note [What a resume may change]).
//
// Note [What a resume may change]
// A checkpoint means "these weights, after these samples, under this config". Keys that change that
// meaning (the model's shape, seq_len, the routing loss, the seed, the batch, the optimizer and its
// schedule's peak, the dataset) make the resumed run a different run under the old run's name, and its
// next checkpoint would record a config the weights were never trained with: they are refused, naming the
// key. Keys that only say how long to go on, how often to validate or save, or where to compute (steps,
// eval cadence, checkpoint cadence, micro_batch: the global batch and its samples stay the same,
// device, precision) may change and are reported. When train.steps changes, the warm-up + cosine schedule
// is recomputed over the new total from the resumed step on (the learning rate at that step changes), and
// the report says by how much.
#pragma once

#include <string>
#include <vector>

#include "dtrn/runtime/status.h"
#include "dtrn/train/job_config.h"

namespace dtrn::train {

// Compares the config stored in the checkpoint (`saved`) with the one given now, at the checkpoint's
// `step`. FailedPrecondition naming the first key whose change is refused; otherwise one line per allowed
// change in `changes` (empty when nothing changed).
Status check_resume_config(const JobConfig& saved, const JobConfig& now, int64_t step,
                           std::vector<std::string>* changes);

}  // namespace dtrn::train
