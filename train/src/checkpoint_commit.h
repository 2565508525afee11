// The two-phase commit of a checkpoint and the recovery rules (Note [Commit protocol]).
//
// Note [Commit protocol]
// Phase 1: rank 0 creates ROOT/step-N/ and fsyncs ROOT, then hands every rank a fresh save id
// (CommitBarrier::prepare). Every rank that owns data (rank_slices.h) writes its shard as <shard>.tmp,
// fsyncs it, renames it to <shard> (the name carries the save id, so it never replaces a file of a
// committed checkpoint of the same step) and reports to rank 0 (CommitBarrier::report: through the
// coordinator when the job has one); a rank without data reports success without a file.
// Phase 2 (rank 0, only when every rank reported success): fsync step-N/ (the shard names), write
// manifest.json.tmp, fsync it, rename it to manifest.json (the commit point: an older manifest of the
// same step is replaced atomically), fsync step-N/, then move ROOT/latest the same way, and finally
// remove the files of step-N/ that the new manifest does not name (an older save's shards).
// A crash anywhere leaves every committed checkpoint loadable: before the manifest rename, step-N/ is
// either absent, uncommitted (no manifest) or still the old committed checkpoint with its old shards.
// On a failure, rank 0 removes this save's files; every rank returns the same Status
// (CommitBarrier::finish carries rank 0's outcome).
// clean_checkpoint_root() at start (with the run directory locked) removes what a crashed save left:
// step folders without a manifest, files a manifest does not name, *.tmp files, and the temporary
// folders of the version 1 format. It never removes a file a readable manifest names.
#pragma once

#include <string>
#include <vector>

#include "checkpoint_format.h"
#include "dtrn/train/commit_barrier.h"
#include "env.h"

namespace dtrn::train {

// "step-NNNNNNNN"; and back: -1 for any name that is not exactly step-<digits>.
std::string step_dir_name(int64_t step);
int64_t parse_step_dir_name(const std::string& name);

// Collective over `barrier`. `manifest` holds everything but the shards and the save id (rank 0's is
// the one written). Returns the checkpoint folder on every rank, or one Status on every rank.
StatusOr<std::string> commit_checkpoint(Env* env, CommitBarrier* barrier, const std::string& root,
                                        Manifest manifest, const std::vector<TensorSlice>& my_slices);

// Removes the leftovers of uncommitted saves under `root` (missing root: nothing to do); `removed`
// receives one line per removal.
Status clean_checkpoint_root(Env* env, const std::string& root, std::vector<std::string>* removed);

// The test hook for kill -9 tests: when the environment variable DTRN_CKPT_CRASH_AT equals `point`,
// the process sends itself SIGKILL. Points, in order: "shard-tmp-written", "shard-renamed",
// "manifest-tmp-written", "manifest-renamed", "latest-moved".
void crash_point(const char* point);

}  // namespace dtrn::train
