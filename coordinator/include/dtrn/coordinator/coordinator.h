// The coordinator's state: jobs and their state machine, agents and their slots, the workers of each
// job generation, failure detection and restarts, and the telemetry aggregated from the workers' stats.
// The gRPC services (service.h) are a thin, authenticated shell around this class; it is written with
// the protocol's message types but knows nothing of transport, so its logic is one place.
//
// Job state machine (dtrn.v1.JobState):
//   PENDING --(agent slots for every rank)--> RUNNING --(all ranks exit 0)--> SUCCEEDED
//   RUNNING --(a rank exits non-zero, is killed, or misses heartbeats)--> RESTARTING (restarts left)
//                                                                     --> FAILED     (none left)
//   RESTARTING --(back-off elapsed, old generation stopped, slots free)--> RUNNING (generation + 1,
//                 every rank resumes from the newest committed checkpoint)
//   any non-terminal --(CancelJob)--> CANCELLED
// Every transition is persisted in the state directory (job_store.h) before it is visible, so a
// coordinator restarted on the same directory recovers its jobs; live workers keep heartbeating with
// their secrets and are adopted again; ranks that do not come back within the heartbeat timeout fail.
//
// Thread-safety: all methods may be called concurrently (one internal mutex).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dtrn/coordinator/job_store.h"
#include "dtrn/coordinator/metrics.h"
#include "dtrn/runtime/status.h"
#include "dtrn/train/trainer.h"
#include "dtrn/v1/coordinator.pb.h"

namespace dtrn::coordinator {

using Clock = std::chrono::steady_clock;

struct CoordinatorOptions {
  std::string state_dir;
  double heartbeat_timeout_s = 10;  // a rank (or agent) silent this long has failed
  double backoff_initial_s = 1;     // restart n waits initial * 2^(n-1), at most backoff_max_s
  double backoff_max_s = 30;
  // A stopped generation's ranks still unreported after this are taken for gone; longer than the agents'
  // --stop-grace (30 s), so that a new generation never starts beside an old rank still saving.
  double stop_grace_s = 60;
  // How long a ReportShard call waits for its phase's outcome before it answers PENDING.
  double commit_wait_s = 1;
};

// A WatchJob subscription: events queued by the coordinator, taken by the RPC thread.
class EventQueue {
 public:
  void push(const v1::JobEvent& e);
  // Waits up to `timeout` for an event; false when none came.
  bool pop(v1::JobEvent* out, std::chrono::milliseconds timeout);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::JobEvent> events_;
  static constexpr size_t kMaxQueued = 4096;  // a watcher that falls this far behind loses the oldest
};

class Coordinator {
 public:
  // Loads every job of `options.state_dir` (created when absent).
  static StatusOr<std::unique_ptr<Coordinator>> Open(const CoordinatorOptions& options);

  // Jobs.
  StatusOr<std::string> submit(const v1::JobSpec& spec);
  StatusOr<v1::Job> get(const std::string& job_id) const;
  std::vector<v1::Job> list() const;
  StatusOr<v1::Job> cancel(const std::string& job_id);
  // The job's current state as the first event, then every later event; NotFound for an unknown job.
  StatusOr<std::shared_ptr<EventQueue>> watch(const std::string& job_id);
  bool is_terminal(const std::string& job_id) const;
  // The dashboard's view: the job, its step summaries after `since_step`, its recent log lines.
  StatusOr<v1::JobHistory> history(const std::string& job_id, int64_t since_step) const;

  // Agents.
  std::string register_agent(const std::string& host, int slots, const std::string& agent_id);
  StatusOr<v1::AgentPollResponse> agent_poll(const v1::AgentPollRequest& request);

  // Workers. Each checks the WorkerRef (job, rank, generation, secret): PermissionDenied otherwise.
  StatusOr<v1::Rendezvous> register_worker(const v1::RegisterWorkerRequest& request);
  StatusOr<v1::HeartbeatResponse> heartbeat(const v1::HeartbeatRequest& request);
  Status step_stats(const v1::StepStats& stats);
  // A phase of a save, through the coordinator (Note [Commit through the coordinator] in
  // checkpoint_reports.cc): records the report and waits up to commit_wait_s for the phase's outcome.
  StatusOr<v1::ShardReportResponse> report_shard(const v1::ShardReport& report);

  // Failure detection, restarts after back-off and scheduling of pending jobs; the server calls it a few
  // times a second.
  void tick();

  Registry& metrics() { return registry_; }
  Counter& rejected(const std::string& reason);

 private:
  struct WorkerSlot {
    int rank = 0;
    std::string agent_id, host, secret;
    std::string state = "starting";  // starting | running | exited | failed | stopping | stopped
    int64_t step = 0;        // newest step heard of (heartbeats, statistics)
    int64_t stats_step = 0;  // newest step of its statistics: they must arrive in order
    std::string phase;
    int pid = 0;
    bool launched = false;  // handed to its agent (ranks > 0 of a multi-rank job wait for rank 0's port)
    Clock::time_point last_heartbeat;
    double last_heartbeat_unix = 0;
    // A rank recovered by a restarted coordinator is not timed out before this (Note [Reconnecting ranks]).
    Clock::time_point reconnect_grace_until{};
  };
  struct PendingStep {
    std::vector<v1::StepStats> ranks;
    int covered = 0;  // ranks these messages speak for (StepStats.ranks)
  };
  // The newest save of a generation's ranks (not persisted: a coordinator restarted during a save
  // abandons it).
  struct SaveRecord {
    int64_t step = -1;
    std::string save_id;
    bool prepared = false;       // rank 0 prepared the folder; otherwise `message` says why not
    std::vector<std::optional<v1::ShardVote>> votes;  // per rank
    v1::CommitOutcome shard = v1::COMMIT_OUTCOME_PENDING;   // decided once every rank voted
    v1::CommitOutcome commit = v1::COMMIT_OUTCOME_PENDING;  // rank 0's COMMIT report
    std::string message;         // why it was abandoned
    bool ended = false;          // counted as committed or abandoned
  };
  struct JobRecord {
    JobRecordData data;            // the persisted part
    std::vector<WorkerSlot> workers;
    train::JobConfig config;
    Clock::time_point restart_at;  // RESTARTING: not before
    Clock::time_point stopped_at;  // when the previous generation was told to stop
    std::map<int64_t, PendingStep> pending_steps;
    std::unique_ptr<train::StarvationMonitor> monitor;
    std::map<int, std::pair<bool, bool>> routing_verdicts;  // layer -> (starved, saturated) last seen
    int64_t step = 0;
    std::vector<std::weak_ptr<EventQueue>> watchers;
    std::deque<v1::StepSummary> history;  // the newest kHistorySteps
    std::deque<v1::JobEvent> recent_logs;  // the newest kRecentLogs
    // The generation's rendezvous (Note [Rendezvous] in coordinator.cc): rank 0's host and the port its
    // agent picked (0: not reported yet), and the launches of the other ranks until then.
    std::string master_host;
    int master_port = 0;
    std::vector<v1::WorkerLaunch> held_launches;
    SaveRecord save;
  };
  static constexpr size_t kHistorySteps = 5000;
  static constexpr size_t kRecentLogs = 200;
  struct AgentRecord {
    std::string id, host;
    int slots = 0;
    Clock::time_point last_poll;
    std::vector<v1::WorkerLaunch> launches;
    std::vector<v1::WorkerRef> stops;
  };

  explicit Coordinator(const CoordinatorOptions& options);
  void register_metrics();
  // Under mu_.
  StatusOr<JobRecord*> find_job(const std::string& job_id);
  StatusOr<WorkerSlot*> authorize_worker(const v1::WorkerRef& ref, JobRecord** job);
  v1::Job job_view(const JobRecord& job) const;
  void persist(JobRecord& job);
  void publish(JobRecord& job, const v1::JobEvent& event);
  void log_event(JobRecord& job, const std::string& line);
  void set_state(JobRecord& job, v1::JobState state, const std::string& message);
  void fail_rank(JobRecord& job, WorkerSlot& slot, const std::string& why);
  void stop_generation(JobRecord& job);
  bool try_schedule(JobRecord& job);
  int free_slots(const AgentRecord& agent) const;
  void on_process_report(const AgentRecord& agent, const v1::ProcessReport& report);
  void release_held_launches(JobRecord& job, int master_port);
  void aggregate(JobRecord& job, int64_t step);
  void update_job_metrics(const JobRecord& job);
  // The job's newest committed checkpoint, and the log line; `source`: how the coordinator learned it.
  void note_checkpoint(JobRecord& job, int64_t step, const std::string& source);
  void record_report(JobRecord& job, const v1::ShardReport& report);
  // A rank's SHARD vote, once; decides the phase when it is the last. False: not recorded.
  bool add_vote(JobRecord& job, int rank, const v1::ShardVote& vote);
  v1::ShardReportResponse answer_report(const JobRecord& job, const v1::ShardReport& report) const;
  void end_save(JobRecord& job, bool committed, const std::string& why);

  CoordinatorOptions options_;
  JobStore store_;
  mutable std::mutex mu_;
  std::condition_variable commit_cv_;  // a save's record or a job's state changed (ReportShard waits on it)
  std::map<std::string, JobRecord> jobs_;
  std::map<std::string, AgentRecord> agents_;
  int64_t next_agent_ = 1;

  Registry registry_;
  Family<Gauge>* routed_fraction_;
  Family<Gauge>* routed_fraction_min_;
  Family<Gauge>* routed_fraction_max_;
  Family<Gauge>* p_attn_mean_;
  Family<Gauge>* p_attn_quantile_;
  Family<Gauge>* threshold_bias_;
  Family<Gauge>* collapsed_;
  Family<Gauge>* starved_;
  Family<Gauge>* saturated_;
  Family<Counter>* fallback_total_;
  Family<Gauge>* loss_;
  Family<Gauge>* tokens_per_second_;
  Family<Gauge>* job_step_;
  Family<Gauge>* job_state_;
  Family<Counter>* job_restarts_;
  Family<Gauge>* workers_;
  Family<Gauge>* last_heartbeat_;
  Family<Histogram>* step_seconds_;
  Family<Counter>* rejected_;
  Family<Counter>* stats_received_;
  Family<Counter>* checkpoint_reports_;
  Family<Counter>* checkpoint_saves_;
  Family<Gauge>* checkpoint_blocked_;
  Family<Gauge>* checkpoint_write_;
};

// "pending", "running", ... (the lower-case state name used in metrics, logs and `dtrn top`).
std::string state_name(v1::JobState state);

}  // namespace dtrn::coordinator
