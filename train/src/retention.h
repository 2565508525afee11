// Which checkpoints a save keeps: the newest `keep` that verify (so a corrupt newer checkpoint never
// counts towards them and cannot push out the last valid one), every checkpoint whose step is a
// multiple of `keep_every`, the one `latest` names and the one just saved. The rest of the committed
// checkpoints are removed, each renamed out of the step-<digits> namespace first (to step-N.deleting),
// so a crash mid-removal never leaves a half-deleted folder that looks like a checkpoint.
// Folders without a readable manifest are left alone (clean_checkpoint_root and verify deal with them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "env.h"

namespace dtrn::train {

// keep = 0 keeps everything. `removed` receives the folders removed.
Status apply_retention(Env* env, const std::string& root, const std::string& just_saved, int64_t keep,
                       int64_t keep_every, std::vector<std::string>* removed);

}  // namespace dtrn::train
