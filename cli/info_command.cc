// `dtrn info`: what this build holds, so a user can tell at once whether the CUDA backend is there.
#include <iostream>

#include "args.h"
#include "commands.h"
#include "dtrn/runtime/device.h"

namespace dtrn::cli {

int run_info(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2, {{"help", false}});
  if (!args.ok()) return usage_error("info", args.status().message());
  if (args->has("help")) {
    std::cout << "usage: dtrn info\n\nPrints the version, the backends built into this binary and the GPUs it sees.\n";
    return 0;
  }
  std::cout << "version: " << DTRN_VERSION << "\n";
  std::cout << "cpu backend: yes\n";
  std::cout << "cuda backend: " << (cuda_compiled() ? "built" : "not built") << "\n";
  std::cout << "cuda devices: " << cuda_device_count() << "\n";
  return 0;
}

}  // namespace dtrn::cli
