#include "dtrn/coordinator/agent.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include "dtrn/runtime/file_io.h"
#include "dtrn/v1/coordinator.grpc.pb.h"

namespace dtrn::coordinator {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

struct Process {
  v1::WorkerRef worker;
  pid_t pid = 0;
  bool running = true;
  int exit_code = 0, signal = 0;
  Clock::time_point term_sent{};  // set when SIGTERM went out
  bool killed = false;
  int master_port = 0;  // rank 0 of a multi-rank job: the MASTER_PORT picked for it
};

std::string key(const v1::WorkerRef& w) {
  return w.job_id() + "/" + std::to_string(w.rank()) + "/" + std::to_string(w.generation());
}

// A port no process of this host listens on now, for rank 0's job store (Note [Rendezvous] in
// coordinator.cc). Rank 0 binds it moments later, with SO_REUSEADDR; should another process take it in
// between, rank 0 fails to listen and the job restarts on another port.
StatusOr<int> pick_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return errno_status("socket", errno);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t n = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return errno_status("a free port for rank 0's job store", err);
  return static_cast<int>(ntohs(a.sin_port));
}

// Launcher variables a worker must not inherit from the agent's own environment: an agent started by
// srun or mpirun would otherwise pass its own rank on, and they take precedence over RANK (launch_env.h).
constexpr const char* kInheritedLauncherVariables[] = {
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_PROCID",         "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"};

// Starts `dtrn train` for `launch`: its config and log files in the work folder, its identity in DTRN_*,
// its place in the job in the torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
// *master_port: the port given to rank 0 of a multi-rank job, picked here when the launch leaves it 0.
StatusOr<pid_t> start_worker(const AgentOptions& options, const v1::WorkerLaunch& launch, int* master_port) {
  const v1::WorkerRef& w = launch.worker();
  const std::string dir = options.work_dir + "/" + w.job_id();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError(dir + ": " + ec.message());
  const std::string stem = dir + "/rank-" + std::to_string(w.rank()) + "-gen-" + std::to_string(w.generation());
  DTRN_RETURN_IF_ERROR(write_file_atomic(stem + ".yaml", launch.config_yaml()));
  std::vector<std::string> argv = {options.dtrn_binary, "train", "--config", stem + ".yaml", "--run-dir",
                                   launch.run_dir(), "--quiet"};
  if (launch.resume()) argv.push_back("--resume");
  std::vector<std::pair<std::string, std::string>> env = {
      {"DTRN_COORDINATOR", options.coordinator.address}, {"DTRN_JOB_ID", w.job_id()},
      {"DTRN_RANK", std::to_string(w.rank())},           {"DTRN_GENERATION", std::to_string(w.generation())},
      {"DTRN_WORKER_SECRET", w.secret()},                {"DTRN_WORKER_HOST", options.host},
      {"DTRN_AUTH_TOKEN", options.coordinator.auth_token}, {"DTRN_TLS_CA", options.coordinator.tls_ca_file},
      {"RANK", std::to_string(w.rank())},                {"WORLD_SIZE", std::to_string(launch.world_size())},
      {"LOCAL_RANK", std::to_string(launch.local_rank())}};
  *master_port = launch.master_port();
  if (launch.world_size() > 1) {
    // As torchrun does: workers sharing this host share its cores, unless the agent was told otherwise.
    if (std::getenv("OMP_NUM_THREADS") == nullptr) {
      const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
      env.push_back({"OMP_NUM_THREADS", std::to_string(std::max(1u, cores / static_cast<unsigned>(options.slots)))});
    }
    if (*master_port == 0) {
      auto port = pick_free_port();
      if (!port.ok()) return port.status();
      *master_port = *port;
    }
    env.push_back({"MASTER_ADDR", launch.master_addr().empty() ? "127.0.0.1" : launch.master_addr()});
    env.push_back({"MASTER_PORT", std::to_string(*master_port)});
  }
  const std::string log = stem + ".log";
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return errno_status("fork", errno);
  if (pid == 0) {
    // The child: dies with the agent, writes to its log, runs dtrn train. Only async-signal-safe calls
    // before exec, apart from setenv on this private copy of the environment.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    for (const char* name : kInheritedLauncherVariables) unsetenv(name);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

Status run_agent(const AgentOptions& input, const std::atomic<bool>* stop) {
  AgentOptions options = input;
  if (options.slots < 1) return Status::InvalidArgument("--slots: must be at least 1");
  if (options.host.empty()) {
    char name[256] = {};
    gethostname(name, sizeof name - 1);
    options.host = name;
  }
  if (options.dtrn_binary.empty()) options.dtrn_binary = fs::read_symlink("/proc/self/exe").string();
  std::error_code ec;
  fs::create_directories(options.work_dir, ec);
  if (ec) return Status::IoError(options.work_dir + ": " + ec.message());
  auto channel = make_channel(options.coordinator);
  if (!channel.ok()) return channel.status();
  auto stub = v1::Agents::NewStub(*channel);
  const auto say = [&](const std::string& line) {
    if (options.verbose) std::cout << "agent: " << line << std::endl;
  };

  std::string agent_id;
  std::map<std::string, Process> processes;
  std::string last_error;
  while (!stop->load()) {
    // Reap.
    for (auto& [k, p] : processes) {
      int status = 0;
      if (p.running && waitpid(p.pid, &status, WNOHANG) == p.pid) {
        p.running = false;
        p.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        p.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        say("worker " + k + " (pid " + std::to_string(p.pid) + ") " +
            (p.signal ? "killed by signal " + std::to_string(p.signal) : "exited with " + std::to_string(p.exit_code)));
      }
      if (p.running && p.term_sent != Clock::time_point{} && !p.killed &&
          std::chrono::duration<double>(Clock::now() - p.term_sent).count() > options.stop_grace_s) {
        kill(p.pid, SIGKILL);
        p.killed = true;
      }
    }
    grpc::Status rpc_status;
    if (agent_id.empty()) {
      v1::RegisterAgentRequest request;
      request.set_host(options.host);
      request.set_slots(options.slots);
      request.set_agent_id(agent_id);
      v1::RegisterAgentResponse response;
      grpc::ClientContext context;
      prepare_context(&context, options.coordinator, 2);
      rpc_status = stub->RegisterAgent(&context, request, &response);
      if (rpc_status.ok()) {
        agent_id = response.agent_id();
        say("registered as " + agent_id + " (" + options.host + ", " + std::to_string(options.slots) + " slots)");
      }
    } else {
      v1::AgentPollRequest request;
      request.set_agent_id(agent_id);
      for (const auto& [k, p] : processes) {
        auto* r = request.add_processes();
        *r->mutable_worker() = p.worker;
        r->set_running(p.running);
        r->set_pid(p.pid);
        r->set_exit_code(p.exit_code);
        r->set_signal(p.signal);
        r->set_master_port(p.master_port);
      }
      v1::AgentPollResponse response;
      grpc::ClientContext context;
      prepare_context(&context, options.coordinator, 2);
      rpc_status = stub->AgentPoll(&context, request, &response);
      if (rpc_status.ok()) {
        // Exits reported are done with.
        for (auto it = processes.begin(); it != processes.end();) it = it->second.running ? std::next(it) : processes.erase(it);
        if (response.reregister()) {
          // The coordinator restarted: register again under the same id, keep the workers.
          v1::RegisterAgentRequest again;
          again.set_host(options.host);
          again.set_slots(options.slots);
          again.set_agent_id(agent_id);
          v1::RegisterAgentResponse reply;
          grpc::ClientContext c2;
          prepare_context(&c2, options.coordinator, 2);
          rpc_status = stub->RegisterAgent(&c2, again, &reply);
          if (rpc_status.ok()) {
            say("re-registered with the coordinator as " + reply.agent_id());
            agent_id = reply.agent_id();
          }
        }
        for (const auto& stop_ref : response.stop()) {
          auto it = processes.find(key(stop_ref));
          if (it == processes.end() || !it->second.running || it->second.term_sent != Clock::time_point{}) continue;
          kill(it->second.pid, SIGTERM);
          it->second.term_sent = Clock::now();
          say("stopping worker " + it->first);
        }
        for (const auto& launch : response.launch()) {
          Process p;
          auto pid = start_worker(options, launch, &p.master_port);
          p.worker = launch.worker();
          if (!pid.ok()) {
            say("cannot start worker " + key(launch.worker()) + ": " + pid.status().message());
            p.running = false;
            p.exit_code = 127;
          } else {
            p.pid = *pid;
            say("started worker " + key(launch.worker()) + " (pid " + std::to_string(p.pid) + ")");
          }
          processes[key(launch.worker())] = p;
        }
      }
    }
    if (!rpc_status.ok()) {
      const std::string error = describe(rpc_status);
      if (error != last_error) say("coordinator " + options.coordinator.address + ": " + error + " (retrying)");
      last_error = error;
    } else {
      last_error.clear();
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(options.poll_s));
  }
  // Shutting down: the workers go with the agent.
  for (auto& [k, p] : processes) if (p.running) kill(p.pid, SIGTERM);
  const auto deadline = Clock::now() + std::chrono::duration<double>(options.stop_grace_s);
  for (auto& [k, p] : processes) {
    while (p.running) {
      int status = 0;
      if (waitpid(p.pid, &status, WNOHANG) == p.pid) break;
      if (Clock::now() > deadline) {
        kill(p.pid, SIGKILL);
        waitpid(p.pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return Status::Ok();
}

}  // namespace dtrn::coordinator
