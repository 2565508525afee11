// `dtrn train`: runs training in this process (see train/trainer.h for the run directory it writes).
#include <iostream>

#include "args.h"
#include "commands.h"
#include "dtrn/parallel/launch_env.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/job_config.h"
#include "dtrn/train/trainer.h"
#include "worker_link.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn train --config job.yaml [--run-dir DIR] [--set section.key=value ...]\n"
    "                  [--init-from FILE.safetensors]\n"
    "       dtrn train --run-dir DIR --resume [--config job.yaml] [--set section.key=value ...]\n"
    "       dtrn train --run-dir DIR --auto-resume --config job.yaml [--set section.key=value ...]\n";

constexpr char kHelp[] =
    "\nTrains a DTRNet model in this process on a `dtrn prep` dataset (data.path), alone or as one rank of\n"
    "a data-parallel job started by mpirun, srun or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT variables:\n"
    "  mpirun -np 4 dtrn train --config job.yaml --set parallel.dp=4 [--set parallel.zero=1]\n"
    "Rank 0 writes the run directory (global figures); see docs/parallel.md.\n\n"
    "  --config FILE        the job config (YAML: model, routing, train, parallel, data, checkpoint,\n"
    "                       telemetry; deploy/configs/ has presets). With --resume it defaults to\n"
    "                       DIR/config.yaml\n"
    "  --set KEY=VALUE      override any key, e.g. --set train.steps=100 (repeatable)\n"
    "  --run-dir DIR        where to write config.yaml, train.log, metrics.jsonl and checkpoints/\n"
    "                       (default runs/<date-time>)\n"
    "  --resume             continue from the newest valid checkpoint in --run-dir\n"
    "  --auto-resume        --resume when --run-dir holds a committed checkpoint, else start afresh\n"
    "                       there (for supervisors that restart a job with the same command line)\n"
    "  --init-from FILE     start a new run from a safetensors file (a dtrn export, or a dense Llama\n"
    "                       checkpoint of matching shape: routers then start fresh)\n"
    "\nRefuses, changing nothing on disk:\n"
    "  a fresh run into a --run-dir that is not empty (another run's state, even a corrupt one, is only\n"
    "  continued with --resume, never overwritten); a --run-dir another dtrn train is using;\n"
    "  --resume with --init-from; --resume with a changed key that changes what the checkpoint means\n"
    "  (model shape, seq_len, routing, seed, global_batch, optimizer, data.path: only train.steps,\n"
    "  eval and checkpoint cadence, micro_batch, device and precision may change, and are logged).\n"
    "A start that fails leaves no new run directory behind. A corrupt newest checkpoint is skipped with\n"
    "a warning on stderr naming it.\n"
    "\nSIGTERM or SIGINT (Slurm and Kubernetes pre-emption, Ctrl-C): the current step finishes, a\n"
    "checkpoint is saved and printed, and dtrn exits with status 75; --resume continues exactly.\n"
    "A second signal stops at once (status 128 + signal).\n"
    "\nA rank that dies or hangs ends the others within parallel.timeout_s (at once when it died), each\n"
    "printing one line naming the lost rank and the collective it waited in.\n"
    "\nExit status: 0 done, 1 error, 2 usage error, 75 stopped by a signal after saving a checkpoint,\n"
    "69 another rank of the job was lost.\n";

}  // namespace

int run_train(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2,
                          {{"config"}, {"run-dir"}, {"set", true, true}, {"resume", false}, {"auto-resume", false}, {"init-from"},
                           {"quiet", false}, {"help", false}});
  if (!args.ok()) return usage_error("train", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (!args->positional().empty()) return usage_error("train", "unexpected argument '" + args->positional()[0] + "'");
  if (args->has("auto-resume") && (args->has("resume") || !args->has("run-dir") || !args->has("config"))) {
    return usage_error("train", "--auto-resume needs --run-dir and --config, and replaces --resume");
  }
  // A folder with a committed checkpoint is resumed; one with run state but none is refused below, as
  // any fresh run into it would be.
  const bool resume = args->has("resume") || (args->has("auto-resume") &&
                                              train::resolve_checkpoint(*args->get("run-dir")).ok());
  if (resume && !args->has("run-dir")) return usage_error("train", "--resume needs --run-dir (the run to continue)");
  if (!resume && !args->has("config")) return usage_error("train", "--config is required");
  if (resume && args->has("init-from")) {
    return usage_error("train", "--resume continues the run's checkpoint and --init-from starts a new run from "
                                "weights: give one");
  }
  // A resumed run's own resolved config is the natural default.
  const std::string config_path = args->get_or("config", *args->get("run-dir") + "/config.yaml");
  auto config = train::load_job_config(config_path, args->all("set"));
  if (!config.ok()) return fail("train", config.status().message());
  train::TrainRunOptions options;
  options.run_dir = args->get_or("run-dir", "");
  options.resume = resume;
  options.init_from = args->get_or("init-from", "");
  options.quiet = args->has("quiet");
  auto link = connect_worker();  // set when an agent started this process
  if (!link.ok()) return fail("train", link.status().message());
  options.telemetry = link->telemetry.get();
  options.commit_barrier = link->commit_barrier.get();
  auto run = train::run_training(*config, options);
  if (!run.ok() && run.status().code() == StatusCode::kCancelled) {
    std::cerr << "dtrn train: " << run.status().message() << std::endl;
    return train::kExitStopped;
  }
  if (!run.ok()) return fail("train", run.status().message());
  // One line for the job, not one per rank.
  auto launch = parallel::read_launch_env();
  if (!launch.ok() || launch->rank == 0) std::cout << "run directory: " << *run << "\n";
  return 0;
}

}  // namespace dtrn::cli
