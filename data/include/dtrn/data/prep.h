// `dtrn prep`: text files -> token shards, a validation split and meta.json.
//
// Each input file is one document (a folder stands for the .txt files under it, recursively, in
// sorted order). Each split is one token stream in input order: every document is preceded by
// <|endoftext|>, so documents are joined by it and the first token of a document is predicted from
// a clean boundary. Whole documents whose name matches a val pattern go to "val", the rest to
// "train"; streams are cut into shards of at most `shard_tokens` tokens (a document may span two
// shards).
//
// Determinism: the output folder is a pure function of the inputs' bytes and paths, the tokenizer
// and the options other than `threads`: documents are encoded by a pool of threads but written in
// input order. Nothing is lost: the whole dataset is written into OUT.tmp-<pid>/ beside the output
// folder (meta.json last, the commit marker) and swapped in only when complete, atomically where the file
// system can exchange two names; an earlier dataset in OUT is removed only after that. A failed run
// removes its temporary folder and leaves OUT exactly as it was.
//
// Errors (one line, naming the file): a missing or unreadable input, an empty document, no training
// document left, a --val-docs pattern that matches nothing, an output folder that cannot be
// written, and an existing output folder holding anything but an earlier prep's files (the swap would
// delete it).
#pragma once

#include <string>
#include <vector>

#include "dtrn/data/dataset_meta.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/runtime/status.h"

namespace dtrn::data {

struct PrepOptions {
  std::vector<std::string> inputs;  // files or folders
  std::string out_dir;
  // Glob patterns (fnmatch, '*' also crosses '/') matched against each document path's trailing
  // parts, with or without ".txt": "carroll-alice" matches
  // ".assets/corpus/gutenberg/carroll-alice.txt", and "sotu/201*" every address from 2010 to 2019.
  // Empty: default_val_patterns(), which may match nothing.
  std::vector<std::string> val_patterns;
  int threads = 0;                            // 0: all hardware threads
  uint64_t shard_tokens = uint64_t(1) << 27;  // 128 Mi tokens = 256 MiB per shard
};

// The validation documents of the fetched corpus (.assets/corpus): three books and the addresses
// from 2010 on.
std::vector<std::string> default_val_patterns();

// True when `pattern` matches `path` in the sense of PrepOptions::val_patterns.
bool matches_val_pattern(const std::string& pattern, const std::string& path);

// Runs prep; returns the meta.json it wrote.
StatusOr<DatasetMeta> prepare_dataset(const Tokenizer& tokenizer, const PrepOptions& options);

}  // namespace dtrn::data
