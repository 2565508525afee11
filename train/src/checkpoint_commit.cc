#include "checkpoint_commit.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "file_io.h"

namespace dtrn::train {
namespace {

using Json = nlohmann::json;

std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

// Unique across the processes and restarts of one run: a save never reuses an older save's names.
std::string new_save_id() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  char id[48];
  std::snprintf(id, sizeof id, "%llx-%x",
                static_cast<unsigned long long>(std::chrono::duration_cast<std::chrono::microseconds>(now).count()),
                static_cast<unsigned>(::getpid()));
  return id;
}

// Phase 1 on one rank: its shard, synced and under its final name.
StatusOr<ShardEntry> write_my_shard(Env* env, const std::string& dir, int64_t rank, int64_t world,
                                    const std::string& save_id, const std::vector<TensorSlice>& slices) {
  if (slices.empty()) return ShardEntry{"", rank, 0, ""};  // a rank that owns no data writes no shard
  const std::string path = join(dir, shard_file_name(rank, world, save_id));
  auto entry = write_shard(env, path + ".tmp", rank, slices);
  if (!entry.ok()) {
    env->remove_file(path + ".tmp");
    return entry.status();
  }
  crash_point("shard-tmp-written");
  Status s = env->rename(path + ".tmp", path);
  if (!s.ok()) {
    env->remove_file(path + ".tmp");
    return s;
  }
  crash_point("shard-renamed");
  entry->file = shard_file_name(rank, world, save_id);
  return entry;
}

Vote shard_vote(StatusOr<ShardEntry>& e) {
  if (!e.ok()) return {false, e.status().message()};
  return {true, Json{{"file", e->file}, {"bytes", e->bytes}, {"header_sha256", e->header_sha256}}.dump()};
}

// Phase 2 on rank 0, once every report is in.
Status commit_on_rank0(Env* env, const std::string& dir, Manifest* m,
                       const std::vector<Vote>& reports) {
  for (size_t r = 0; r < reports.size(); ++r) {
    const std::string who = "rank " + std::to_string(r);
    if (!reports[r].ok) return Status::IoError(who + " could not write its shard: " + reports[r].text);
    Json j = Json::parse(reports[r].text, nullptr, false);
    if (!j.is_object() || !j.contains("file") || !j.contains("bytes") || !j.contains("header_sha256")) {
      return Status::IoError(who + " sent an unreadable shard report");
    }
    if (j["file"] != "") m->shards.push_back({j["file"], static_cast<int64_t>(r), j["bytes"], j["header_sha256"]});
  }
  DTRN_RETURN_IF_ERROR(env->sync_dir(dir));
  const std::string manifest = join(dir, kManifestFile);
  DTRN_RETURN_IF_ERROR(write_file(env, manifest + ".tmp", manifest_text(*m)));
  crash_point("manifest-tmp-written");
  DTRN_RETURN_IF_ERROR(env->rename(manifest + ".tmp", manifest));
  crash_point("manifest-renamed");
  return env->sync_dir(dir);
}

// After the commit: `latest` names the new checkpoint and the folder holds only what its manifest
// names. Failures here leave the checkpoint committed; they are reported but lose nothing.
Status finish_on_rank0(Env* env, const std::string& root, const std::string& dir, const Manifest& m) {
  const std::string name = dir.substr(dir.find_last_of('/') + 1);
  DTRN_RETURN_IF_ERROR(write_file_atomic(env, join(root, kLatestFile), name + "\n"));
  crash_point("latest-moved");
  std::set<std::string> named = {kManifestFile};
  for (const ShardEntry& s : m.shards) named.insert(s.file);
  auto names = env->list_dir(dir);
  if (!names.ok()) return names.status();
  for (const std::string& n : *names) {
    if (!named.count(n)) DTRN_RETURN_IF_ERROR(env->remove_tree(join(dir, n)));
  }
  return Status::Ok();
}

// Removes this save's files after a failed phase 1 or 2; a step folder this save created goes whole.
void abandon(Env* env, const std::string& dir, bool created, const std::string& save_id) {
  if (created && !env->exists(join(dir, kManifestFile))) {
    env->remove_tree(dir);
    return;
  }
  auto names = env->list_dir(dir);
  if (!names.ok()) return;
  for (const std::string& n : *names) {
    if (n.find("." + save_id + ".") != std::string::npos || n == std::string(kManifestFile) + ".tmp") {
      env->remove_file(join(dir, n));
    }
  }
}

}  // namespace

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

int64_t parse_step_dir_name(const std::string& name) {
  constexpr size_t kPrefix = 5;  // "step-"
  if (name.size() <= kPrefix || name.compare(0, kPrefix, "step-") != 0 || name.size() > kPrefix + 18) return -1;
  int64_t step = 0;
  for (size_t i = kPrefix; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

void crash_point(const char* point) {
  const char* at = std::getenv("DTRN_CKPT_CRASH_AT");
  if (at != nullptr && std::strcmp(at, point) == 0) ::kill(::getpid(), SIGKILL);
}

StatusOr<std::string> commit_checkpoint(Env* env, CommitBarrier* barrier, const std::string& root,
                                        Manifest manifest, const std::vector<TensorSlice>& my_slices) {
  const bool rank0 = barrier->rank() == 0;
  const int64_t step = manifest.progress.step;
  const std::string dir = join(root, step_dir_name(step));
  // Rank 0 prepares the folder; its id, or its error, reaches every rank.
  Vote prepared;
  bool created = false;
  if (rank0) {
    created = !env->exists(dir);
    Status s = env->create_dirs(dir);
    if (s.ok()) s = env->sync_dir(root);
    prepared = s.ok() ? Vote{true, new_save_id()} : Vote{false, s.message()};
  }
  prepared = barrier->prepare(step, prepared);
  if (!prepared.ok) {
    if (rank0 && created) env->remove_tree(dir);
    return Status::IoError(prepared.text);
  }
  manifest.save_id = prepared.text;
  manifest.shards.clear();

  auto mine = write_my_shard(env, dir, barrier->rank(), barrier->world(), manifest.save_id, my_slices);
  const std::vector<Vote> reports = barrier->report(step, shard_vote(mine));

  Vote outcome;
  if (rank0) {
    Status s = commit_on_rank0(env, dir, &manifest, reports);
    if (!s.ok()) {
      abandon(env, dir, created, manifest.save_id);
      outcome = {false, s.message()};
    } else {
      s = finish_on_rank0(env, root, dir, manifest);
      outcome = s.ok() ? Vote{true, ""} : Vote{false, dir + " was committed; then: " + s.message()};
    }
  }
  outcome = barrier->finish(step, outcome);
  if (!outcome.ok) return Status::IoError(outcome.text);
  return dir;
}

Status clean_checkpoint_root(Env* env, const std::string& root, std::vector<std::string>* removed) {
  if (!env->is_dir(root)) return Status::Ok();
  auto names = env->list_dir(root);
  if (!names.ok()) return names.status();
  auto remove = [&](const std::string& path, const std::string& why) -> Status {
    removed->push_back("removed " + path + " (" + why + ")");
    return env->remove_tree(path);
  };
  for (const std::string& name : *names) {
    const std::string path = join(root, name);
    if (parse_step_dir_name(name) < 0) {
      // The version 1 format's temporaries, and a `latest` whose rename never happened.
      if (name.compare(0, 5, "step-") == 0 || name == std::string(kLatestFile) + ".tmp") {
        DTRN_RETURN_IF_ERROR(remove(path, "left by an interrupted save"));
      }
      continue;
    }
    if (!env->exists(join(path, kManifestFile))) {
      DTRN_RETURN_IF_ERROR(remove(path, "an uncommitted save: no manifest"));
      continue;
    }
    auto m = read_manifest(path);
    if (!m.ok()) continue;  // not ours to judge here: verification reports it and loading skips it
    std::set<std::string> named = {kManifestFile};
    for (const ShardEntry& s : m->shards) named.insert(s.file);
    auto files = env->list_dir(path);
    if (!files.ok()) return files.status();
    for (const std::string& f : *files) {
      if (!named.count(f)) DTRN_RETURN_IF_ERROR(remove(join(path, f), "not named by the manifest"));
    }
  }
  return Status::Ok();
}

}  // namespace dtrn::train
