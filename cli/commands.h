// The subcommands of `dtrn`. Each takes argv with argv[0] = "dtrn" and argv[1] = its own name, prints
// --help, reports errors as one line on stderr and returns the process exit code.
#pragma once

#include "args.h"
#include "dtrn/data/tokenizer.h"

namespace dtrn::cli {

int run_tokenize(int argc, char** argv);  // tokenize_command.cc
int run_prep(int argc, char** argv);      // prep_command.cc
int run_info(int argc, char** argv);      // info_command.cc
int run_train(int argc, char** argv);     // train_command.cc
int run_eval(int argc, char** argv);      // eval_command.cc
int run_export(int argc, char** argv);    // export_command.cc
int run_bench(int argc, char** argv);     // bench_command.cc
int run_ckpt(int argc, char** argv);      // ckpt_command.cc

// train::resolve_checkpoint, printing "dtrn <command>: skipped ..." on stderr for each newer checkpoint
// that fails verification (eval_command.cc). Shared by eval and export.
StatusOr<std::string> resolve_checkpoint_warning(const std::string& command, const std::string& path);

// The tokenizer named by --tokenizer-dir, else the default folder (tokenize_command.cc). Shared by
// the commands that read text.
StatusOr<data::Tokenizer> load_tokenizer(const Args& args);

}  // namespace dtrn::cli
