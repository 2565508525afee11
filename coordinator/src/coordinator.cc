// The job state machine, agents and scheduling, worker registration and failure detection
// (coordinator.h). Telemetry aggregation is in job_telemetry.cc.
#include "dtrn/coordinator/coordinator.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <random>

#include "dtrn/parallel/lost_rank.h"

namespace dtrn::coordinator {
namespace {

std::string random_bytes(size_t n) {
  static std::mutex mu;
  static std::random_device device;
  std::lock_guard<std::mutex> lock(mu);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(device() & 0xff);
  return out;
}

std::string random_hex(size_t bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : random_bytes(bytes)) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

bool terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

bool live(const std::string& worker_state) {
  return worker_state == "starting" || worker_state == "running" || worker_state == "stopping";
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

std::string state_name(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_PENDING: return "pending";
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_RESTARTING: return "restarting";
    case v1::JOB_STATE_SUCCEEDED: return "succeeded";
    case v1::JOB_STATE_FAILED: return "failed";
    case v1::JOB_STATE_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

void EventQueue::push(const v1::JobEvent& e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (events_.size() >= kMaxQueued) events_.pop_front();
    events_.push_back(e);
  }
  cv_.notify_one();
}

bool EventQueue::pop(v1::JobEvent* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  *out = std::move(events_.front());
  events_.pop_front();
  return true;
}

Coordinator::Coordinator(const CoordinatorOptions& options) : options_(options), store_(options.state_dir) {
  register_metrics();
}

StatusOr<std::unique_ptr<Coordinator>> Coordinator::Open(const CoordinatorOptions& options) {
  if (options.state_dir.empty()) return Status::InvalidArgument("--state-dir: required");
  std::unique_ptr<Coordinator> c(new Coordinator(options));
  DTRN_RETURN_IF_ERROR(c->store_.init());
  auto records = c->store_.load_all();
  if (!records.ok()) return records.status();
  for (auto& data : *records) {
    JobRecord job;
    auto config = train::parse_job_config(data.job.spec().config_yaml());
    if (!config.ok()) return Status::DataLoss("job " + data.job.id() + ": stored config: " + config.status().message());
    job.config = *config;
    job.monitor = std::make_unique<train::StarvationMonitor>(job.config.routing.starvation_threshold,
                                                             job.config.routing.starvation_window);
    // Note [Reconnecting ranks]
    // Live ranks get two heartbeat timeouts from now to show up again (RESTARTING goes on at once).
    // One is not enough: a rank's gRPC channel finds the old coordinator gone only at its next call
    // and then reconnects with back-off (1 s, growing 1.6x), so on a loaded host its first
    // heartbeat to the new coordinator can come more than a timeout after the restart, and a
    // healthy job would be restarted.
    for (const auto& w : data.workers) {
      WorkerSlot slot;
      slot.rank = w.rank;
      slot.agent_id = w.agent_id;
      slot.host = w.host;
      slot.secret = w.secret;
      slot.state = w.state == "stopping" ? "stopped" : w.state;
      slot.launched = true;
      slot.last_heartbeat = Clock::now();
      slot.reconnect_grace_until =
          Clock::now() + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(2 * options.heartbeat_timeout_s));
      job.workers.push_back(slot);
    }
    job.step = data.job.step();
    job.restart_at = Clock::now();
    job.data = std::move(data);
    const std::string id = job.data.job.id();
    c->update_job_metrics(job);
    c->jobs_.emplace(id, std::move(job));
    c->log_event(c->jobs_.at(id), "coordinator recovered the job from " + options.state_dir + " in state " +
                                      state_name(c->jobs_.at(id).data.job.state()));
  }
  return c;
}

Counter& Coordinator::rejected(const std::string& reason) { return rejected_->add({{"reason", reason}}); }

StatusOr<Coordinator::JobRecord*> Coordinator::find_job(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return Status::NotFound("no job " + job_id);
  return &it->second;
}

v1::Job Coordinator::job_view(const JobRecord& job) const {
  v1::Job view = job.data.job;
  view.set_step(job.step);
  for (const auto& w : job.workers) {
    auto* info = view.add_workers();
    info->set_rank(w.rank);
    info->set_host(w.host);
    info->set_state(w.state);
    info->set_step(w.step);
    info->set_phase(w.phase);
    info->set_heartbeat_age_s(seconds_since(w.last_heartbeat));
    info->set_pid(w.pid);
  }
  return view;
}

void Coordinator::persist(JobRecord& job) {
  job.data.job.set_step(job.step);
  job.data.workers.clear();
  for (const auto& w : job.workers) job.data.workers.push_back({w.rank, w.agent_id, w.host, w.secret, w.state});
  const Status s = store_.save(job.data);
  if (!s.ok()) log_event(job, "cannot persist the job: " + s.message());
}

void Coordinator::publish(JobRecord& job, const v1::JobEvent& event) {
  if (event.has_step()) {
    job.history.push_back(event.step());
    if (job.history.size() > kHistorySteps) job.history.pop_front();
  } else if (event.has_log()) {
    job.recent_logs.push_back(event);
    if (job.recent_logs.size() > kRecentLogs) job.recent_logs.pop_front();
  }
  auto& watchers = job.watchers;
  watchers.erase(std::remove_if(watchers.begin(), watchers.end(),
                                [&](const std::weak_ptr<EventQueue>& w) {
                                  auto q = w.lock();
                                  if (q) q->push(event);
                                  return !q;
                                }),
                 watchers.end());
}

void Coordinator::log_event(JobRecord& job, const std::string& line) {
  (void)store_.append_log(job.data.job.id(), timestamp() + " " + line);
  v1::JobEvent e;
  e.set_time_unix_s(unix_now());
  e.set_log(line);
  publish(job, e);
}

void Coordinator::set_state(JobRecord& job, v1::JobState state, const std::string& message) {
  job.data.job.set_state(state);
  job.data.job.set_message(message);
  persist(job);
  log_event(job, "job " + job.data.job.id() + " " + state_name(state) + (message.empty() ? "" : ": " + message));
  v1::JobEvent e;
  e.set_time_unix_s(unix_now());
  *e.mutable_state() = job_view(job);
  publish(job, e);
  update_job_metrics(job);
  commit_cv_.notify_all();  // a save whose rank failed is abandoned
}

StatusOr<std::string> Coordinator::submit(const v1::JobSpec& spec) {
  auto config = train::parse_job_config(spec.config_yaml());
  if (!config.ok()) return Status::InvalidArgument("job config: " + config.status().message());
  if (spec.max_restarts() < 0 || spec.max_restarts() > 1000) {
    return Status::InvalidArgument("max_restarts: " + std::to_string(spec.max_restarts()) + " is outside 0..1000");
  }
  std::lock_guard<std::mutex> lock(mu_);
  int64_t last = 0;
  for (const auto& [id, job] : jobs_) last = std::max<int64_t>(last, std::stoll(id.substr(4)));
  char id[32];
  std::snprintf(id, sizeof id, "job-%06lld", static_cast<long long>(last + 1));
  JobRecord job;
  job.config = *config;
  job.monitor = std::make_unique<train::StarvationMonitor>(job.config.routing.starvation_threshold,
                                                           job.config.routing.starvation_window);
  v1::Job& j = job.data.job;
  j.set_id(id);
  *j.mutable_spec() = spec;
  j.set_world_size(static_cast<int32_t>(config->parallel.dp * config->parallel.tp));
  j.set_run_dir(spec.run_dir().empty() ? store_.default_run_dir(id) : spec.run_dir());
  auto& stored = jobs_.emplace(id, std::move(job)).first->second;
  set_state(stored, v1::JOB_STATE_PENDING,
            "waiting for " + std::to_string(stored.data.job.world_size()) + " worker slot(s)");
  try_schedule(stored);
  return std::string(id);
}

StatusOr<v1::Job> Coordinator::get(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return Status::NotFound("no job " + job_id);
  return job_view(it->second);
}

std::vector<v1::Job> Coordinator::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::Job> out;
  for (const auto& [id, job] : jobs_) out.push_back(job_view(job));
  return out;
}

StatusOr<v1::JobHistory> Coordinator::history(const std::string& job_id, int64_t since_step) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return Status::NotFound("no job " + job_id);
  v1::JobHistory h;
  *h.mutable_job() = job_view(it->second);
  for (const auto& s : it->second.history) {
    if (s.step() > since_step) *h.add_steps() = s;
  }
  for (const auto& e : it->second.recent_logs) *h.add_events() = e;
  return h;
}

bool Coordinator::is_terminal(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() || terminal(it->second.data.job.state());
}

StatusOr<v1::Job> Coordinator::cancel(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto job = find_job(job_id);
  if (!job.ok()) return job.status();
  if (terminal((*job)->data.job.state())) {
    return Status::FailedPrecondition("job " + job_id + " is already " + state_name((*job)->data.job.state()));
  }
  stop_generation(**job);
  set_state(**job, v1::JOB_STATE_CANCELLED, "cancelled by request");
  return job_view(**job);
}

StatusOr<std::shared_ptr<EventQueue>> Coordinator::watch(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto job = find_job(job_id);
  if (!job.ok()) return job.status();
  auto queue = std::make_shared<EventQueue>();
  v1::JobEvent e;
  e.set_time_unix_s(unix_now());
  *e.mutable_state() = job_view(**job);
  queue->push(e);
  (*job)->watchers.push_back(queue);
  return queue;
}

// ---- Agents and scheduling ----------------------------------------------------------------------

std::string Coordinator::register_agent(const std::string& host, int slots, const std::string& agent_id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string id = agent_id;
  if (id.empty() || agents_.count(id)) {
    do id = "agent-" + random_hex(4); while (agents_.count(id));
  }
  AgentRecord& a = agents_[id];
  a.id = id;
  a.host = host;
  a.slots = slots;
  a.last_poll = Clock::now();
  for (auto& [job_id, job] : jobs_) {
    if (!terminal(job.data.job.state()) && job.data.job.state() != v1::JOB_STATE_RUNNING) try_schedule(job);
  }
  return id;
}

int Coordinator::free_slots(const AgentRecord& agent) const {
  int used = 0;
  for (const auto& [id, job] : jobs_) {
    for (const auto& w : job.workers) used += (w.agent_id == agent.id && live(w.state)) ? 1 : 0;
  }
  return agent.slots - used;
}

// Note [Rendezvous]
// The ranks of a generation find each other as torchrun's do: every worker is started with RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, and rank 0 serves the job's store on MASTER_PORT
// (parallel/process_groups.h; CPU ranks then form a TCP mesh, GPU ranks NCCL). Only rank 0's host can
// tell which of its ports is free, so rank 0's launch goes out first with master_port 0; its agent
// binds a free port, starts rank 0 with it and reports it with its next poll; then the other ranks'
// launches go out with that port and rank 0's host (loopback for ranks on rank 0's own agent, so that a
// single machine needs no resolvable host name). Each generation gets a fresh port, so a restarted job
// never meets the previous generation's store. The cost is one agent poll (0.3 s) per generation.
bool Coordinator::try_schedule(JobRecord& job) {
  const v1::JobState state = job.data.job.state();
  if (state != v1::JOB_STATE_PENDING && state != v1::JOB_STATE_RESTARTING) return false;
  if (state == v1::JOB_STATE_RESTARTING && Clock::now() < job.restart_at) return false;
  for (const auto& w : job.workers) {
    if (live(w.state)) return false;  // the previous generation is still stopping
  }
  // Fill hosts in order, so a tensor-parallel group lands on as few hosts as possible.
  const int world = job.data.job.world_size();
  std::vector<AgentRecord*> placement;
  for (auto& [id, agent] : agents_) {
    for (int free = free_slots(agent); free > 0 && static_cast<int>(placement.size()) < world; --free) {
      placement.push_back(&agent);
    }
  }
  if (static_cast<int>(placement.size()) < world) return false;

  v1::Job& j = job.data.job;
  j.set_generation(j.generation() + 1);
  job.data.unique_id = random_bytes(128);
  job.workers.clear();
  job.pending_steps.clear();
  job.held_launches.clear();
  job.save = SaveRecord{};
  job.master_host = placement[0]->host;
  job.master_port = 0;
  std::map<std::string, int> local_ranks;  // per agent
  // The new generation redoes the steps after the checkpoint: the dashboard's history forgets them.
  while (!job.history.empty() && job.history.back().step() > j.checkpoint_step()) job.history.pop_back();
  const bool resume = j.checkpoint_step() > 0;
  for (int rank = 0; rank < world; ++rank) {
    WorkerSlot slot;
    slot.rank = rank;
    slot.agent_id = placement[rank]->id;
    slot.host = placement[rank]->host;
    slot.secret = random_hex(16);
    slot.last_heartbeat = Clock::now();
    slot.last_heartbeat_unix = unix_now();
    slot.step = j.checkpoint_step();
    v1::WorkerLaunch launch;
    launch.mutable_worker()->set_job_id(j.id());
    launch.mutable_worker()->set_rank(rank);
    launch.mutable_worker()->set_generation(j.generation());
    launch.mutable_worker()->set_secret(slot.secret);
    launch.set_world_size(world);
    launch.set_config_yaml(j.spec().config_yaml());
    launch.set_run_dir(j.run_dir());
    launch.set_resume(resume);
    launch.set_local_rank(local_ranks[placement[rank]->id]++);
    slot.launched = rank == 0 || world == 1;
    if (slot.launched) placement[rank]->launches.push_back(launch);
    else job.held_launches.push_back(launch);
    job.workers.push_back(slot);
  }
  job.step = j.checkpoint_step();
  set_state(job, v1::JOB_STATE_RUNNING,
            "generation " + std::to_string(j.generation()) + " on " + std::to_string(world) + " rank(s)" +
                (resume ? ", resuming from the checkpoint of step " + std::to_string(j.checkpoint_step()) : ""));
  return true;
}

StatusOr<v1::AgentPollResponse> Coordinator::agent_poll(const v1::AgentPollRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::AgentPollResponse response;
  auto it = agents_.find(request.agent_id());
  if (it == agents_.end()) {
    response.set_reregister(true);
    return response;
  }
  AgentRecord& agent = it->second;
  agent.last_poll = Clock::now();
  // A rank that ended because another was lost is reported after the others, so that the job's message
  // names the rank that failed first rather than one that merely noticed.
  std::vector<const v1::ProcessReport*> reports;
  for (const auto& report : request.processes()) reports.push_back(&report);
  std::stable_partition(reports.begin(), reports.end(), [](const v1::ProcessReport* r) {
    return r->running() || r->exit_code() != parallel::kExitLostRank;
  });
  for (const v1::ProcessReport* report : reports) on_process_report(agent, *report);
  for (auto& l : agent.launches) *response.add_launch() = std::move(l);
  for (auto& s : agent.stops) *response.add_stop() = std::move(s);
  agent.launches.clear();
  agent.stops.clear();
  return response;
}

void Coordinator::on_process_report(const AgentRecord& agent, const v1::ProcessReport& report) {
  const v1::WorkerRef& ref = report.worker();
  auto it = jobs_.find(ref.job_id());
  WorkerSlot* slot = nullptr;
  if (it != jobs_.end() && ref.generation() == it->second.data.job.generation()) {
    for (auto& w : it->second.workers) {
      if (w.rank == ref.rank() && w.secret == ref.secret() && w.agent_id == agent.id) slot = &w;
    }
  }
  if (slot == nullptr) {
    // A worker of an older generation or of a job this coordinator no longer runs: it must go.
    if (report.running()) agents_[agent.id].stops.push_back(ref);
    return;
  }
  JobRecord& job = it->second;
  slot->pid = report.pid();
  if (slot->rank == 0 && report.running() && report.master_port() > 0 && job.master_port == 0 &&
      job.data.job.state() == v1::JOB_STATE_RUNNING) {
    release_held_launches(job, report.master_port());
  }
  if (report.running()) return;
  if (slot->state == "stopping" || !live(slot->state)) {
    if (slot->state == "stopping") slot->state = "stopped";
    return;
  }
  if (report.exit_code() == 0) {
    slot->state = "exited";
    const bool all = std::all_of(job.workers.begin(), job.workers.end(),
                                 [](const WorkerSlot& w) { return w.state == "exited"; });
    if (all && job.data.job.state() == v1::JOB_STATE_RUNNING) {
      set_state(job, v1::JOB_STATE_SUCCEEDED, "every rank finished at step " + std::to_string(job.step));
    } else {
      persist(job);
    }
    return;
  }
  fail_rank(job, *slot,
            report.signal() != 0 ? "was killed by signal " + std::to_string(report.signal())
                                 : "exited with status " + std::to_string(report.exit_code()) +
                                       (report.exit_code() == parallel::kExitLostRank ? " (it lost another rank)" : ""));
}

void Coordinator::release_held_launches(JobRecord& job, int master_port) {
  job.master_port = master_port;
  const std::string& rank0_agent = job.workers.front().agent_id;
  for (auto& launch : job.held_launches) {
    WorkerSlot& slot = job.workers[launch.worker().rank()];
    auto agent = agents_.find(slot.agent_id);
    if (agent == agents_.end()) continue;  // its host is gone: the rank misses its heartbeats and fails
    launch.set_master_addr(slot.agent_id == rank0_agent ? "127.0.0.1" : job.master_host);
    launch.set_master_port(master_port);
    slot.launched = true;
    slot.last_heartbeat = Clock::now();  // its start begins now
    agent->second.launches.push_back(std::move(launch));
  }
  job.held_launches.clear();
}

void Coordinator::stop_generation(JobRecord& job) {
  job.stopped_at = Clock::now();
  job.held_launches.clear();
  for (auto& w : job.workers) {
    if (w.state != "starting" && w.state != "running") continue;
    if (!w.launched) {
      w.state = "stopped";  // never handed to its agent
      continue;
    }
    w.state = "stopping";
    auto agent = agents_.find(w.agent_id);
    if (agent == agents_.end()) {
      w.state = "stopped";  // its host is gone with it
      continue;
    }
    v1::WorkerRef ref;
    ref.set_job_id(job.data.job.id());
    ref.set_rank(w.rank);
    ref.set_generation(job.data.job.generation());
    ref.set_secret(w.secret);
    agent->second.stops.push_back(ref);
  }
}

void Coordinator::fail_rank(JobRecord& job, WorkerSlot& slot, const std::string& why) {
  slot.state = "failed";
  const std::string what = "rank " + std::to_string(slot.rank) + " on " + slot.host + " " + why + " (last step " +
                           std::to_string(slot.step) + ", phase " + (slot.phase.empty() ? "start" : slot.phase) +
                           ")";
  if (job.data.job.state() != v1::JOB_STATE_RUNNING) {
    persist(job);
    return;
  }
  stop_generation(job);
  v1::Job& j = job.data.job;
  if (j.restarts() >= j.spec().max_restarts()) {
    set_state(job, v1::JOB_STATE_FAILED, what + "; no restarts left (max_restarts " +
                                             std::to_string(j.spec().max_restarts()) + ")");
    return;
  }
  j.set_restarts(j.restarts() + 1);
  job_restarts_->add({{"job", j.id()}}).inc();
  const double backoff =
      std::min(options_.backoff_max_s, options_.backoff_initial_s * std::pow(2.0, j.restarts() - 1));
  job.restart_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(backoff));
  char buf[96];
  std::snprintf(buf, sizeof buf, "; restart %d of %d in %.1f s from the checkpoint of step %lld", j.restarts(),
                j.spec().max_restarts(), backoff, static_cast<long long>(j.checkpoint_step()));
  set_state(job, v1::JOB_STATE_RESTARTING, what + buf);
}

void Coordinator::tick() {
  std::lock_guard<std::mutex> lock(mu_);
  // Agents silent past the timeout take their workers with them.
  for (auto it = agents_.begin(); it != agents_.end();) {
    if (seconds_since(it->second.last_poll) <= options_.heartbeat_timeout_s) {
      ++it;
      continue;
    }
    const std::string id = it->first, host = it->second.host;
    it = agents_.erase(it);
    for (auto& [job_id, job] : jobs_) {
      for (auto& w : job.workers) {
        if (w.agent_id != id || !live(w.state)) continue;
        if (w.state == "stopping") w.state = "stopped";
        else fail_rank(job, w, "lost its agent (no poll from " + host + " for " +
                                   std::to_string(static_cast<int>(options_.heartbeat_timeout_s)) + " s)");
      }
    }
  }
  std::map<std::string, int> worker_counts = {{"starting", 0}, {"running", 0}, {"stopping", 0},
                                              {"stopped", 0}, {"exited", 0}, {"failed", 0}};
  // A rank whose agent has been silent for half the timeout too (it polls every fraction of a second)
  // has most likely gone down with its host: the agent's own timeout, at most half a timeout later,
  // fails it and names the cause, instead of a missed heartbeat that hides it.
  const auto agent_silent = [&](const std::string& agent_id) {
    const auto a = agents_.find(agent_id);
    return a != agents_.end() && seconds_since(a->second.last_poll) > options_.heartbeat_timeout_s / 2;
  };
  for (auto& [id, job] : jobs_) {
    for (auto& w : job.workers) {
      const double silent = seconds_since(w.last_heartbeat);
      if ((w.state == "starting" || w.state == "running") &&
          silent > options_.heartbeat_timeout_s && Clock::now() > w.reconnect_grace_until &&
          !agent_silent(w.agent_id)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "missed heartbeats for %.1f s", silent);
        fail_rank(job, w, buf);
      }
      if (w.state == "stopping" && seconds_since(job.stopped_at) > options_.stop_grace_s) w.state = "stopped";
    }
    try_schedule(job);
    for (const auto& w : job.workers) {
      if (!terminal(job.data.job.state()) || !live(w.state)) ++worker_counts[w.state];
    }
  }
  for (const auto& [state, n] : worker_counts) workers_->add({{"state", state}}).set(n);
}

// ---- Workers ------------------------------------------------------------------------------------

StatusOr<Coordinator::WorkerSlot*> Coordinator::authorize_worker(const v1::WorkerRef& ref, JobRecord** job) {
  auto it = jobs_.find(ref.job_id());
  if (it != jobs_.end() && ref.generation() == it->second.data.job.generation()) {
    for (auto& w : it->second.workers) {
      if (w.rank == ref.rank() && !ref.secret().empty() && w.secret == ref.secret()) {
        *job = &it->second;
        return &w;
      }
    }
  }
  rejected_->add({{"reason", "permission_denied"}}).inc();
  return Status::PermissionDenied("worker " + ref.job_id() + "/rank " + std::to_string(ref.rank()) +
                                                     "/generation " + std::to_string(ref.generation()) +
                                                     " was not given to this caller");
}

StatusOr<v1::Rendezvous> Coordinator::register_worker(const v1::RegisterWorkerRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  JobRecord* job = nullptr;
  auto slot = authorize_worker(request.worker(), &job);
  if (!slot.ok()) return slot.status();
  WorkerSlot& w = **slot;
  w.pid = request.pid();
  w.last_heartbeat = Clock::now();
  w.last_heartbeat_unix = unix_now();
  if (w.state == "starting") w.state = "running";
  const v1::Job& j = job->data.job;
  v1::Rendezvous r;
  r.set_world_size(j.world_size());
  r.set_dp(static_cast<int32_t>(job->config.parallel.dp));
  r.set_tp(static_cast<int32_t>(job->config.parallel.tp));
  r.set_tp_rank(w.rank % r.tp());
  r.set_dp_rank(w.rank / r.tp());
  r.set_master_addr(job->master_host);
  r.set_master_port(job->master_port);
  r.set_unique_id(job->data.unique_id);
  return r;
}

StatusOr<v1::HeartbeatResponse> Coordinator::heartbeat(const v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  JobRecord* job = nullptr;
  auto slot = authorize_worker(request.worker(), &job);
  if (!slot.ok()) return slot.status();
  WorkerSlot& w = **slot;
  const double blocked = request.checkpoint_blocked_ms(), write = request.checkpoint_write_ms();
  if (!std::isfinite(blocked) || !std::isfinite(write) || blocked < 0 || write < 0) {
    rejected_->add({{"reason", "invalid_argument"}}).inc();
    return Status::InvalidArgument("heartbeat: checkpoint_blocked_ms and checkpoint_write_ms must be finite and "
                                   "non-negative, got " + std::to_string(blocked) + " and " + std::to_string(write));
  }
  w.last_heartbeat = Clock::now();
  w.last_heartbeat_unix = unix_now();
  w.step = std::max(w.step, request.step());
  w.phase = request.phase();
  if (w.state == "starting") w.state = "running";
  last_heartbeat_->add({{"job", job->data.job.id()}, {"rank", std::to_string(w.rank)}}).set(w.last_heartbeat_unix);
  note_checkpoint(*job, request.checkpoint_step(), "rank " + std::to_string(w.rank) + "'s heartbeat");
  if (request.checkpoint_step() > 0) {
    const Labels labels = {{"job", job->data.job.id()}, {"rank", std::to_string(w.rank)}};
    checkpoint_blocked_->add(labels).set(blocked / 1000);
    checkpoint_write_->add(labels).set(write / 1000);
  }
  v1::HeartbeatResponse response;
  response.set_stop(job->data.job.state() != v1::JOB_STATE_RUNNING || w.state == "stopping");
  return response;
}

}  // namespace dtrn::coordinator
