// Load on one coordinator: N simulated workers (default 256) stream per-step statistics at R Hz (default
// 10) to a real `dtrn coordinator` process over loopback, through the real protocol: a simulated agent
// registers N slots and receives the launches (and so the workers' secrets) of a dp=N job; each worker
// registers, heartbeats once a second and streams one StepStats of L D layers (default 12) per tick.
// Measured over a window after a warm-up:
//   - Heartbeat round-trip latency (a unary RPC made while the streams run), p50 / p99 / max;
//   - end to end: from the moment the last rank sent step s to the moment a WatchJob client receives the
//     coordinator's summary of step s (aggregation over all N ranks), p50 / p99 / max;
//   - the coordinator's CPU (utime + stime over the window, from /proc) and peak resident memory.
// Usage: coordinator_load_bench [--workers N] [--hz R] [--layers L] [--seconds S] [--dtrn PATH]
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dtrn/coordinator/client.h"
#include "dtrn/v1/coordinator.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace dtrn;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

// utime + stime of a process, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string status_field(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) == 0) {
      line = line.substr(name.size() + 1);
      return line.substr(line.find_first_not_of(" \t"));
    }
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  int workers = 256, hz = 10, layers = 12;
  double seconds = 20;
  std::string dtrn = std::filesystem::read_symlink("/proc/self/exe").parent_path().string() + "/dtrn";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--workers") workers = std::atoi(argv[i + 1]);
    else if (flag == "--hz") hz = std::atoi(argv[i + 1]);
    else if (flag == "--layers") layers = std::atoi(argv[i + 1]);
    else if (flag == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (flag == "--dtrn") dtrn = argv[i + 1];
    else {
      std::fprintf(stderr, "coordinator_load_bench: unknown flag %s\n", argv[i]);
      return 2;
    }
  }

  // The coordinator, a separate process so that its CPU and memory are its own.
  const std::string state = std::filesystem::temp_directory_path() / ("dtrn-load-bench-" + std::to_string(getpid()));
  const std::string log = state + ".log";
  const pid_t coordinator = fork();
  if (coordinator == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    freopen(log.c_str(), "w", stdout);
    freopen(log.c_str(), "a", stderr);
    execl(dtrn.c_str(), dtrn.c_str(), "coordinator", "--state-dir", state.c_str(), "--listen", "127.0.0.1:0",
          "--metrics-listen", "off", static_cast<char*>(nullptr));
    _exit(127);
  }
  int port = 0;
  for (int i = 0; i < 200 && port == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const size_t at = text.find("listening on 127.0.0.1:");
    if (at != std::string::npos) port = std::atoi(text.c_str() + at + 23);
  }
  if (port == 0) {
    std::fprintf(stderr, "coordinator_load_bench: %s coordinator did not start (see %s)\n", dtrn.c_str(), log.c_str());
    kill(coordinator, SIGKILL);
    return 1;
  }
  coordinator::ClientOptions client;
  client.address = "127.0.0.1:" + std::to_string(port);
  auto channel = *coordinator::make_channel(client);
  auto jobs = v1::Jobs::NewStub(channel);
  auto agents = v1::Agents::NewStub(channel);

  // A simulated agent with one slot per worker, and a dp=N job for it.
  v1::RegisterAgentRequest reg;
  reg.set_host("bench-host");
  reg.set_slots(workers);
  v1::RegisterAgentResponse agent;
  {
    grpc::ClientContext c;
    if (!agents->RegisterAgent(&c, reg, &agent).ok()) return 1;
  }
  v1::SubmitJobRequest submit;
  submit.mutable_spec()->set_config_yaml(
      "model: {d_model: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, d_ff: 160, seq_len: 64, layout: TDTT}\n"
      "train: {steps: 1000000, micro_batch: 1, global_batch: " + std::to_string(workers) + ", device: cpu}\n"
      "parallel: {dp: " + std::to_string(workers) + "}\ndata: {path: unused}\n");
  v1::SubmitJobResponse job;
  {
    grpc::ClientContext c;
    const grpc::Status s = jobs->SubmitJob(&c, submit, &job);
    if (!s.ok()) {
      std::fprintf(stderr, "submit: %s\n", coordinator::describe(s).c_str());
      return 1;
    }
  }
  std::vector<v1::WorkerRef> refs;
  while (static_cast<int>(refs.size()) < workers) {
    v1::AgentPollRequest poll;
    poll.set_agent_id(agent.agent_id());
    v1::AgentPollResponse resp;
    grpc::ClientContext c;
    if (!agents->AgentPoll(&c, poll, &resp).ok()) return 1;
    for (const auto& l : resp.launch()) refs.push_back(l.worker());
  }
  std::atomic<bool> stop{false};
  // The agent keeps polling, reporting every worker as running, or the coordinator would drop them.
  std::thread agent_loop([&] {
    while (!stop) {
      v1::AgentPollRequest poll;
      poll.set_agent_id(agent.agent_id());
      for (const auto& r : refs) {
        auto* p = poll.add_processes();
        *p->mutable_worker() = r;
        p->set_running(true);
        p->set_pid(1);
      }
      v1::AgentPollResponse resp;
      grpc::ClientContext c;
      (void)agents->AgentPoll(&c, poll, &resp);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  });

  // The watcher: when each step's summary arrives.
  std::mutex mu;
  std::map<int64_t, Clock::time_point> last_sent, summarized;
  grpc::ClientContext watch_context;
  v1::WatchJobRequest watch;
  watch.set_job_id(job.job_id());
  auto reader = jobs->WatchJob(&watch_context, watch);
  std::thread watcher([&] {
    v1::JobEvent e;
    while (reader->Read(&e)) {
      if (!e.has_step()) continue;
      std::lock_guard<std::mutex> lock(mu);
      summarized.emplace(e.step().step(), Clock::now());
    }
  });

  // Senders: T threads, each driving N/T workers' streams and heartbeats.
  const int threads = std::min(workers, 16);
  const auto start = Clock::now();
  const auto tick = std::chrono::microseconds(1000000 / hz);
  const double warmup_s = 3;
  std::vector<std::vector<double>> heartbeat_ms(threads);
  std::atomic<int64_t> sent{0}, failed{0};
  std::vector<std::thread> senders;
  for (int t = 0; t < threads; ++t) {
    senders.emplace_back([&, t] {
      auto stub = v1::Workers::NewStub(channel);
      struct Stream {
        v1::WorkerRef ref;
        std::unique_ptr<grpc::ClientContext> context;
        v1::StreamStatsResponse response;
        std::unique_ptr<grpc::ClientWriter<v1::StepStats>> writer;
      };
      // Stable addresses: the writer keeps pointers to its context and response.
      std::vector<std::unique_ptr<Stream>> streams;
      for (int w = t; w < workers; w += threads) {
        auto owned = std::make_unique<Stream>();
        Stream& s = *owned;
        s.ref = refs[w];
        v1::RegisterWorkerRequest r;
        *r.mutable_worker() = s.ref;
        r.set_host("bench-host");
        v1::Rendezvous rdv;
        grpc::ClientContext c;
        if (!stub->RegisterWorker(&c, r, &rdv).ok()) ++failed;
        s.context = std::make_unique<grpc::ClientContext>();
        s.writer = stub->StreamStats(s.context.get(), &s.response);
        streams.push_back(std::move(owned));
      }
      for (int64_t step = 1; !stop; ++step) {
        const auto due = start + step * tick;
        std::this_thread::sleep_until(due);
        for (auto& sp : streams) {
          Stream& s = *sp;
          v1::StepStats m;
          *m.mutable_worker() = s.ref;
          m.set_step(step);
          m.set_loss(3.0);
          m.set_tokens_per_s(1000);
          m.set_step_ms(100);
          for (int l = 0; l < layers; ++l) {
            auto* ls = m.add_layers();
            ls->set_layer(2 * l + 2);
            ls->set_f(0.1 + 0.001 * (s.ref.rank() % 10));
            ls->set_s(0.2);
          }
          if (!s.writer->Write(m)) ++failed;
          ++sent;
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          auto& last = last_sent[step];
          last = std::max(last, Clock::now());
        }
        // One heartbeat a second per worker, spread over the ticks.
        const double now_s = std::chrono::duration<double>(Clock::now() - start).count();
        for (size_t i = step % hz; i < streams.size(); i += hz) {
          v1::HeartbeatRequest h;
          *h.mutable_worker() = streams[i]->ref;
          h.set_step(step);
          h.set_phase("train");
          v1::HeartbeatResponse resp;
          grpc::ClientContext c;
          const auto t0 = Clock::now();
          const bool ok = stub->Heartbeat(&c, h, &resp).ok();
          if (!ok) ++failed;
          if (ok && now_s > warmup_s) heartbeat_ms[t].push_back(ms_since(t0));
        }
      }
      for (auto& s : streams) {
        s->writer->WritesDone();
        (void)s->writer->Finish();
      }
    });
  }

  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
  const double cpu0 = cpu_seconds(coordinator);
  const int64_t sent0 = sent;
  const auto window_start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double cpu1 = cpu_seconds(coordinator);
  const double window_s = std::chrono::duration<double>(Clock::now() - window_start).count();
  const int64_t sent1 = sent;
  const std::string rss = status_field(coordinator, "VmRSS"), hwm = status_field(coordinator, "VmHWM");
  stop = true;
  for (auto& t : senders) t.join();
  watch_context.TryCancel();
  watcher.join();
  agent_loop.join();
  kill(coordinator, SIGTERM);
  waitpid(coordinator, nullptr, 0);
  std::filesystem::remove_all(state);
  std::filesystem::remove(log);

  std::vector<double> hb;
  for (auto& v : heartbeat_ms) hb.insert(hb.end(), v.begin(), v.end());
  std::vector<double> e2e;
  int64_t steps_sent = 0;
  for (const auto& [step, t] : last_sent) {
    const double at_s = std::chrono::duration<double>(t - start).count();
    if (at_s < warmup_s || at_s > warmup_s + seconds) continue;
    ++steps_sent;
    auto it = summarized.find(step);
    if (it != summarized.end()) e2e.push_back(std::chrono::duration<double, std::milli>(it->second - t).count());
  }
  std::printf("coordinator load: %d workers x %d Hz x %d layers, %.0f s window (after %.0f s warm-up)\n", workers, hz,
              layers, window_s, warmup_s);
  std::printf("  stats messages sent: %.0f/s (target %d/s), failed calls: %lld\n", (sent1 - sent0) / window_s,
              workers * hz, static_cast<long long>(failed.load()));
  std::printf("  heartbeat RPC latency ms: p50 %.2f  p99 %.2f  max %.2f  (%zu calls)\n", percentile(hb, 0.5),
              percentile(hb, 0.99), percentile(hb, 1.0), hb.size());
  std::printf("  step summary latency ms (last rank's send -> WatchJob receipt): p50 %.2f  p99 %.2f  max %.2f  "
              "(%zu of %lld steps summarized)\n",
              percentile(e2e, 0.5), percentile(e2e, 0.99), percentile(e2e, 1.0), e2e.size(),
              static_cast<long long>(steps_sent));
  std::printf("  coordinator CPU: %.1f%% of one core; resident memory %s (peak %s)\n",
              100 * (cpu1 - cpu0) / window_s, rss.c_str(), hwm.c_str());
  return 0;
}
