// `dtrn train`: runs training in this process (see train/trainer.h for the run directory it writes).
#include <iostream>

#include "args.h"
#include "commands.h"
#include "dtrn/train/job_config.h"
#include "dtrn/train/trainer.h"
#include "worker_link.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn train --config job.yaml [--run-dir DIR] [--set section.key=value ...] [--resume]\n"
    "                  [--init-from FILE.safetensors]\n";

constexpr char kHelp[] =
    "\nTrains a DTRNet model in this process on a `dtrn prep` dataset (data.path).\n\n"
    "  --config FILE        the job config (YAML: model, routing, train, parallel, data, checkpoint,\n"
    "                       telemetry; deploy/configs/ has presets)\n"
    "  --set KEY=VALUE      override any key, e.g. --set train.steps=100 (repeatable)\n"
    "  --run-dir DIR        where to write config.yaml, train.log, metrics.jsonl and checkpoints/\n"
    "                       (default runs/<date-time>)\n"
    "  --resume             continue from the newest checkpoint in --run-dir\n"
    "  --init-from FILE     start from a safetensors file (a dtrn export, or a dense Llama checkpoint\n"
    "                       of matching shape: routers then start fresh)\n";

}  // namespace

int run_train(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2,
                          {{"config"}, {"run-dir"}, {"set", true, true}, {"resume", false}, {"init-from"},
                           {"quiet", false}, {"help", false}});
  if (!args.ok()) return usage_error("train", args.status().message(), kUsage);
  if (args->has("help")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (!args->positional().empty()) return usage_error("train", "unexpected argument '" + args->positional()[0] + "'", kUsage);
  if (!args->has("config")) return usage_error("train", "--config is required", kUsage);
  if (args->has("resume") && !args->has("run-dir")) {
    return usage_error("train", "--resume needs --run-dir (the run to continue)", kUsage);
  }
  auto config = train::load_job_config(*args->get("config"), args->all("set"));
  if (!config.ok()) return fail("train", config.status().message());
  train::TrainRunOptions options;
  options.run_dir = args->get_or("run-dir", "");
  options.resume = args->has("resume");
  options.init_from = args->get_or("init-from", "");
  options.quiet = args->has("quiet");
  auto telemetry = connect_worker_telemetry();  // set when an agent started this process
  if (!telemetry.ok()) return fail("train", telemetry.status().message());
  options.telemetry = telemetry->get();
  auto run = train::run_training(*config, options);
  if (!run.ok()) return fail("train", run.status().message());
  std::cout << "run directory: " << *run << "\n";
  return 0;
}

}  // namespace dtrn::cli
