// `dtrn prep`: text files -> token shards, validation split and meta.json (see dtrn/data/prep.h).
#include <iostream>
#include <string>

#include "args.h"
#include "commands.h"
#include "dtrn/data/prep.h"
#include "dtrn/data/tokenizer.h"

namespace dtrn::cli {

namespace {

std::string usage() {
  std::string defaults;
  for (const std::string& p : data::default_val_patterns()) defaults += " " + p;
  return "usage: dtrn prep --input PATH... --out DIR [--val-docs PATTERN...] [--threads N]\n"
         "                 [--shard-tokens N] [--tokenizer-dir DIR]\n"
         "\n"
         "Tokenizes text files into uint16 token shards for training. Each file is one document (a "
         "folder\n"
         "stands for its .txt files, recursively, sorted); each document is preceded by "
         "<|endoftext|>.\n"
         "Whole documents matching --val-docs go to the validation split. The output is "
         "byte-identical\n"
         "whatever --threads is. See docs/data.md for the shard format and meta.json.\n"
         "\n"
         "  --input PATH...        text files or folders\n"
         "  --out DIR              output folder: train_NNNNNN.bin, val_NNNNNN.bin, meta.json; "
         "written as\n"
         "                         DIR.tmp-<pid> beside it and swapped in only when complete, so a "
         "failed run\n"
         "                         leaves an earlier dataset in DIR as it was. An existing DIR must be "
         "empty or\n"
         "                         a dtrn prep folder (anything else in it is refused, never deleted)\n"
         "  --val-docs PATTERN...  globs matched against the end of each document path, \".txt\" "
         "optional\n"
         "                         (default, for the fetched corpus:" +
         defaults +
         ")\n"
         "  --threads N            encoding threads (default: all cores)\n"
         "  --shard-tokens N       tokens per shard (default 134217728)\n"
         "  --tokenizer-dir DIR    tokenizer files (default: $DTRN_ASSETS/tokenizer, else "
         ".assets/tokenizer)\n";
}

}  // namespace

int run_prep(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2,
                          {{"help", false},
                           {"input", true, true},
                           {"out", true},
                           {"val-docs", true, true},
                           {"threads", true},
                           {"shard-tokens", true},
                           {"tokenizer-dir", true}});
  if (!args.ok()) return usage_error("prep", args.status().message());
  if (args->has("help")) {
    std::cout << usage();
    return 0;
  }
  if (!args->positional().empty()) {
    return usage_error("prep", "unexpected argument '" + args->positional()[0] + "'");
  }
  if (args->all("input").empty()) return usage_error("prep", "--input is required");
  if (!args->has("out")) return usage_error("prep", "--out is required");
  auto threads = args->get_int("threads", 0);
  if (!threads.ok()) return fail("prep", threads.status().message());
  if (args->has("threads") && *threads <= 0) {
    return fail("prep", "--threads must be at least 1 (leave it out to use every core)");
  }
  auto shard_tokens = args->get_int("shard-tokens", 1LL << 27);
  if (!shard_tokens.ok()) return fail("prep", shard_tokens.status().message());
  if (*shard_tokens <= 0) return fail("prep", "--shard-tokens must be positive");

  auto tokenizer = load_tokenizer(*args);
  if (!tokenizer.ok()) return fail("prep", tokenizer.status().message());

  data::PrepOptions options;
  options.inputs = args->all("input");
  options.out_dir = *args->get("out");
  options.val_patterns = args->all("val-docs");
  options.threads = static_cast<int>(*threads);
  options.shard_tokens = static_cast<uint64_t>(*shard_tokens);
  auto meta = data::prepare_dataset(*tokenizer, options);
  if (!meta.ok()) return fail("prep", meta.status().message());

  for (const char* name : {"train", "val"}) {
    const data::SplitStats& s = *meta->split(name);
    std::printf("%-5s %5llu documents %11llu tokens %11llu bytes  %.3f bytes/token  %zu shard(s)\n",
                name, static_cast<unsigned long long>(s.documents),
                static_cast<unsigned long long>(s.tokens), static_cast<unsigned long long>(s.bytes),
                s.bytes_per_token(), s.shards.size());
  }
  std::printf("wrote %s/meta.json\n", options.out_dir.c_str());
  return 0;
}

}  // namespace dtrn::cli
