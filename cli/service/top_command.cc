// `dtrn top`: a live terminal view of a job, like top: its state, loss and throughput, each D layer's
// routed fraction as a bar with its min/max over ranks and its starvation verdict, the workers and their
// heartbeats, and the newest events. Redraws every second from GetJob and a WatchJob stream.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "dtrn/coordinator/coordinator.h"
#include "dtrn/train/job_config.h"
#include "dtrn/v1/coordinator.grpc.pb.h"
#include "service_commands.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn top [--job ID] [--once] [--coordinator ADDR] [--auth-token-file F] [--tls-ca F]\n";
constexpr char kHelp[] =
    "\nA live view of a job (the newest one unless --job is given), refreshed every second; Ctrl-C quits.\n\n"
    "  --job ID               the job to show\n"
    "  --once                 print one frame without clearing the screen and exit\n";

// What the WatchJob stream has told so far.
struct Feed {
  std::mutex mu;
  v1::StepSummary last;
  std::deque<std::string> events;
};

std::string bar(double f, int width) {
  std::string out(width + 2, '.');
  out.front() = '[';
  out.back() = ']';
  std::fill_n(out.begin() + 1, std::clamp(static_cast<int>(f * width + 0.5), 0, width), '#');
  return out;
}

std::string frame(const v1::Job& job, Feed& feed, const std::string& address) {
  std::ostringstream out;
  char buf[256];
  int64_t total = 0;
  if (auto c = train::parse_job_config(job.spec().config_yaml()); c.ok()) total = c->train.steps;
  const std::time_t now = std::time(nullptr);
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&now));
  std::lock_guard<std::mutex> lock(feed.mu);
  const v1::StepSummary& s = feed.last;
  std::snprintf(buf, sizeof buf, "dtrn top - %s (%s)  generation %d  restarts %d  step %lld/%lld   %s\n",
                job.id().c_str(), coordinator::state_name(job.state()).c_str(), job.generation(), job.restarts(),
                static_cast<long long>(job.step()), static_cast<long long>(total), clock);
  out << buf;
  std::snprintf(buf, sizeof buf, "loss %.4f   %.0f tokens/s   %.0f ms/step (slowest rank)   checkpoint step %lld   %s\n",
                s.loss(), s.tokens_per_s(), s.step_ms(), static_cast<long long>(job.checkpoint_step()), address.c_str());
  out << buf;
  if (!job.message().empty()) out << job.message() << "\n";
  out << "\nLAYER  ROUTED FRACTION f                           f      min    max    p_attn\n";
  for (const auto& l : s.layers()) {
    std::snprintf(buf, sizeof buf, "L%-5d %s  %.3f  %.3f  %.3f  %.3f  %s\n", l.layer(), bar(l.f(), 40).c_str(), l.f(),
                  l.f_min(), l.f_max(), l.s(), l.starved() ? "STARVED" : (l.saturated() ? "SATURATED" : ""));
    out << buf;
  }
  out << "\nRANK  HOST              STATE      STEP     PHASE       HEARTBEAT  PID\n";
  for (const auto& w : job.workers()) {
    std::snprintf(buf, sizeof buf, "%-5d %-17s %-10s %-8lld %-11s %6.1f s   %d\n", w.rank(), w.host().c_str(),
                  w.state().c_str(), static_cast<long long>(w.step()), w.phase().c_str(), w.heartbeat_age_s(), w.pid());
    out << buf;
  }
  out << "\nEVENTS\n";
  for (const auto& e : feed.events) out << e << "\n";
  return out.str();
}

}  // namespace

int run_top(int argc, char** argv) {
  auto specs = client_flag_specs();
  specs.push_back({"job"});
  specs.push_back({"once", false});
  specs.push_back({"help", false});
  auto args = Args::Parse(argc, argv, 2, specs);
  if (!args.ok()) return usage_error("top", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp << kClientFlagsHelp;
    return 0;
  }
  auto client = client_options(*args);
  if (!client.ok()) return fail("top", client.status().message());
  auto channel = coordinator::make_channel(*client);
  if (!channel.ok()) return fail("top", channel.status().message());
  auto stub = v1::Jobs::NewStub(*channel);

  std::string job_id = args->get_or("job", "");
  if (job_id.empty()) {
    v1::ListJobsResponse list;
    grpc::ClientContext context;
    coordinator::prepare_context(&context, *client, 5);
    const grpc::Status s = stub->ListJobs(&context, {}, &list);
    if (!s.ok()) return fail("top", "coordinator " + client->address + ": " + coordinator::describe(s));
    if (list.jobs().empty()) return fail("top", "the coordinator at " + client->address + " has no jobs");
    job_id = list.jobs(list.jobs_size() - 1).id();
  }

  Feed feed;
  grpc::ClientContext watch_context;
  coordinator::prepare_context(&watch_context, *client, 0);
  v1::WatchJobRequest watch_request;
  watch_request.set_job_id(job_id);
  auto reader = stub->WatchJob(&watch_context, watch_request);
  std::thread watcher([&] {
    v1::JobEvent e;
    while (reader->Read(&e)) {
      std::lock_guard<std::mutex> lock(feed.mu);
      if (e.has_step()) feed.last = e.step();
      if (e.has_log()) {
        const std::time_t t = static_cast<std::time_t>(e.time_unix_s());
        char clock[16];
        std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&t));
        feed.events.push_front(std::string(clock) + "  " + e.log());
        if (feed.events.size() > 8) feed.events.pop_back();
      }
    }
  });

  const bool once = args->has("once");
  int code = 0;
  for (bool first = true;; first = false) {
    if (!first) std::this_thread::sleep_for(std::chrono::seconds(1));
    else if (once) std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the stream deliver
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    grpc::ClientContext context;
    coordinator::prepare_context(&context, *client, 5);
    const grpc::Status s = stub->GetJob(&context, request, &job);
    if (!s.ok()) {
      std::cerr << "dtrn top: coordinator " << client->address << ": " << coordinator::describe(s) << "\n";
      code = 1;
      break;
    }
    std::cout << (once ? "" : "\x1b[H\x1b[2J") << frame(job, feed, client->address) << std::flush;
    if (once) break;
  }
  watch_context.TryCancel();
  watcher.join();
  return code;
}

}  // namespace dtrn::cli
