// dtrn: one binary, subcommands like git. The table below is the one list of them.
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "commands.h"
#if DTRN_HAVE_COORDINATOR
#include "service/service_commands.h"
#endif
#include "dtrn/runtime/device.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};

constexpr Command kCommands[] = {
    {"train", "train a DTRNet model in this process (alone or as one rank)", dtrn::cli::run_train},
    {"eval", "CE loss, perplexity, bits per byte and routing of a checkpoint", dtrn::cli::run_eval},
    {"export", "a checkpoint -> one safetensors file (Hugging Face Llama names)", dtrn::cli::run_export},
    {"ckpt", "list, verify or inspect a run's checkpoints", dtrn::cli::run_ckpt},
    {"prep", "text files -> token shards, validation split and meta.json", dtrn::cli::run_prep},
    {"tokenize", "text on stdin -> GPT-2 token ids on stdout (--decode: the reverse)",
     dtrn::cli::run_tokenize},
    {"bench", "training throughput, MFU and peak memory of a config (synthetic tokens)", dtrn::cli::run_bench},
    {"info", "what this build of dtrn holds: backends, devices, version", dtrn::cli::run_info},
#if DTRN_HAVE_COORDINATOR
    {"coordinator", "the service: schedules jobs, watches workers, exports telemetry", dtrn::cli::run_coordinator},
    {"agent", "one per host: runs workers for a coordinator", dtrn::cli::run_agent},
    {"submit", "send a job to a coordinator", dtrn::cli::run_submit},
    {"launch", "run a job as local worker processes (embedded coordinator)", dtrn::cli::run_launch},
    {"top", "live terminal view of a job: per-layer routing, workers, events", dtrn::cli::run_top},
#endif
};

void print_help(std::ostream& os) {
  os << "usage: dtrn <command> [options]   (dtrn help <command> or dtrn <command> --help for details)\n"
        "       dtrn --version\n\ncommands:\n";
  for (const auto& c : kCommands) os << "  " << c.name << std::string(12 - std::strlen(c.name), ' ') << c.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      (std::strcmp(argv[1], "help") == 0 && argc == 2)) {
    print_help(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "--version") == 0) {
    std::cout << "dtrn " << DTRN_VERSION << " (cuda backend: " << (dtrn::cuda_compiled() ? "built" : "not built")
              << ")\n";
    return 0;
  }
  // `dtrn help train` is `dtrn train --help`.
  char help_flag[] = "--help";
  char* help_argv[] = {argv[0], argc > 2 ? argv[2] : nullptr, help_flag, nullptr};
  if (std::strcmp(argv[1], "help") == 0) {
    argc = 3;
    argv = help_argv;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) == 0) {
      try {
        return c.run(argc, argv);
      } catch (const std::exception& e) {
        std::cerr << "dtrn " << c.name << ": " << e.what() << "\n";
        return 1;
      }
    }
  }
  std::cerr << "dtrn: unknown command '" << argv[1] << "'\n";
  print_help(std::cerr);
  return 2;
}
