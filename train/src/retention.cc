#include "retention.h"

#include <algorithm>

#include "checkpoint_commit.h"
#include "checkpoint_format.h"
#include "dtrn/train/checkpoint.h"
#include "file_io.h"

namespace dtrn::train {

Status apply_retention(Env* env, const std::string& root, const std::string& just_saved, int64_t keep,
                       int64_t keep_every, std::vector<std::string>* removed) {
  if (keep <= 0) return Status::Ok();
  auto names = env->list_dir(root);
  if (!names.ok()) return names.status();
  std::string latest;
  if (auto text = read_file(root + "/" + kLatestFile); text.ok()) latest = root + "/" + text->substr(0, text->find('\n'));
  std::vector<std::pair<int64_t, std::string>> dirs;  // newest first
  for (const std::string& name : *names) {
    const int64_t step = parse_step_dir_name(name);
    if (step >= 0) dirs.emplace_back(step, root + "/" + name);
  }
  std::sort(dirs.rbegin(), dirs.rend());
  int64_t kept = 0;
  for (const auto& [step, dir] : dirs) {
    const bool pinned = dir == just_saved || dir == latest || (keep_every > 0 && step % keep_every == 0);
    if (kept < keep || pinned) {
      // Only a checkpoint that verifies counts towards `keep`; a pinned one is kept either way.
      if (kept < keep && verify_checkpoint(dir).ok()) ++kept;
      continue;
    }
    if (!env->exists(dir + "/" + kManifestFile) || !read_manifest(dir).ok()) continue;  // not a valid one
    const std::string doomed = dir + ".deleting";
    DTRN_RETURN_IF_ERROR(env->rename(dir, doomed));
    DTRN_RETURN_IF_ERROR(env->remove_tree(doomed));
    removed->push_back(dir);
  }
  return dirs.empty() ? Status::Ok() : env->sync_dir(root);
}

}  // namespace dtrn::train
