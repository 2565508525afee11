// `dtrn submit`: sends a job to a coordinator; --wait follows it to its end.
#include <iostream>

#include "dtrn/train/job_config.h"
#include "service_commands.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn submit JOB.yaml [--set KEY=VALUE ...] [--name NAME] [--max-restarts N] [--run-dir DIR]\n"
    "                   [--wait] [--coordinator ADDR] [--auth-token-file F] [--tls-ca F]\n";
constexpr char kHelp[] =
    "\nSubmits a job (the config resolved here, --set applied) and prints its id.\n\n"
    "  --max-restarts N       restarts from the last checkpoint before the job fails (default 3)\n"
    "  --run-dir DIR          where the workers write (default <state-dir>/runs/<job id>)\n"
    "  --wait                 follow the job's events until it ends; exit 0 only if it succeeded\n";

}  // namespace

int run_submit(int argc, char** argv) {
  auto specs = client_flag_specs();
  for (const char* f : {"name", "max-restarts", "run-dir"}) specs.push_back({f});
  specs.push_back({"set", true, true});
  specs.push_back({"wait", false});
  specs.push_back({"help", false});
  auto args = Args::Parse(argc, argv, 2, specs);
  if (!args.ok()) return usage_error("submit", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp << kClientFlagsHelp;
    return 0;
  }
  if (args->positional().size() != 1) return usage_error("submit", "expected one JOB.yaml");
  auto config = train::load_job_config(args->positional()[0], args->all("set"));
  if (!config.ok()) return fail("submit", config.status().message());
  auto client = client_options(*args);
  if (!client.ok()) return fail("submit", client.status().message());
  auto restarts = args->get_int("max-restarts", 3);
  if (!restarts.ok()) return fail("submit", restarts.status().message());

  v1::JobSpec spec;
  spec.set_name(args->get_or("name", args->positional()[0]));
  spec.set_config_yaml(train::to_yaml(*config));
  spec.set_max_restarts(static_cast<int32_t>(*restarts));
  spec.set_run_dir(args->get_or("run-dir", ""));
  auto job_id = submit_job(*client, spec);
  if (!job_id.ok()) return fail("submit", job_id.status().message());
  std::cout << *job_id << std::endl;
  if (!args->has("wait")) return 0;
  std::string error;
  const v1::JobState state = follow_job(*client, *job_id, 1, &error);
  if (state == v1::JOB_STATE_UNSPECIFIED) return fail("submit", "lost the job's events: " + error);
  return state == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}

}  // namespace dtrn::cli
