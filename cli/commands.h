// The subcommands of `dtrn`. Each takes argv with argv[0] = "dtrn" and argv[1] = its own name, prints
// --help, reports errors as one line on stderr and returns the process exit code.
#pragma once

namespace dtrn::cli {

int run_tokenize(int argc, char** argv);  // tokenize_command.cc
int run_prep(int argc, char** argv);      // prep_command.cc
int run_info(int argc, char** argv);      // info_command.cc

}  // namespace dtrn::cli
