// `dtrn ckpt list|verify|inspect PATH`: a run's checkpoints without training or loading a model.
#include <cstdio>
#include <iostream>

#include "args.h"
#include "commands.h"
#include "dtrn/train/checkpoint.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] = "usage: dtrn ckpt list|verify|inspect PATH\n";
constexpr char kHelp[] =
    "\n  list PATH      the step folders of a run directory (or its checkpoints/ folder), newest first:\n"
    "                 step, layout, size and state (ok, uncommitted, or why the manifest is unreadable);\n"
    "                 * marks the one checkpoints/latest names\n"
    "  verify PATH    every checksum of every checkpoint of a run directory, or of one checkpoint folder;\n"
    "                 one line per failure naming the file and the tensor; exit status 1 when any fails\n"
    "  inspect PATH   a checkpoint's counters, layout, shards and tensor slices (PATH: a checkpoint folder,\n"
    "                 or a run directory: its newest valid checkpoint)\n";

std::string layout_text(const train::CheckpointLayout& l) {
  return "dp" + std::to_string(l.dp) + " tp" + std::to_string(l.tp) + " zero" + std::to_string(l.zero);
}

int list(const std::string& path, bool verify) {
  auto all = train::list_checkpoints(path, verify);
  if (!all.ok()) return fail("ckpt", all.status().message());
  int failed = 0;
  for (const train::CheckpointInfo& c : *all) {
    char line[128];
    std::snprintf(line, sizeof line, "%c %10lld  %-16s %12llu bytes  ", c.latest ? '*' : ' ',
                  static_cast<long long>(c.step), layout_text(c.layout).c_str(),
                  static_cast<unsigned long long>(c.bytes));
    std::cout << line << c.dir << "  " << c.state << "\n";
    failed += c.state != "ok";
  }
  return verify && failed > 0 ? 1 : 0;
}

}  // namespace

int run_ckpt(int argc, char** argv) {
  if (argc >= 3 && (std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (argc != 4) return usage_error("ckpt", "expected a subcommand (list, verify, inspect) and a PATH");
  const std::string sub = argv[2], path = argv[3];
  if (sub == "list") return list(path, false);
  if (sub == "verify") {
    auto one = train::list_checkpoints(path, false);
    if (one.ok() && one->empty()) {  // a checkpoint folder itself
      Status s = train::verify_checkpoint(path);
      if (!s.ok()) return fail("ckpt", s.message());
      std::cout << path << ": ok\n";
      return 0;
    }
    return list(path, true);
  }
  if (sub == "inspect") {
    auto ckpt = resolve_checkpoint_warning("ckpt", path);
    if (!ckpt.ok()) return fail("ckpt", ckpt.status().message());
    auto text = train::inspect_checkpoint(*ckpt);
    if (!text.ok()) return fail("ckpt", text.status().message());
    std::cout << *text;
    return 0;
  }
  return usage_error("ckpt", "unknown subcommand '" + sub + "' (list, verify, inspect)");
}

}  // namespace dtrn::cli
