// The worker side of the protocol: a train::TelemetrySink that registers the worker with its coordinator,
// heartbeats (every second, and at once on a phase change or a committed checkpoint), streams each
// step's statistics, and turns the coordinator's stop answer into stop_requested(). Its commit_barrier()
// commits the job's checkpoints through the coordinator.
//
// A worker started by an agent finds its identity in the environment:
//   DTRN_COORDINATOR (host:port), DTRN_JOB_ID, DTRN_RANK, DTRN_GENERATION, DTRN_WORKER_SECRET,
//   DTRN_WORKER_HOST, and optionally DTRN_AUTH_TOKEN and DTRN_TLS_CA.
// A coordinator that is briefly away (restarting) loses the statistics sent meanwhile, never the run:
// the client reconnects and training goes on. A coordinator that refuses this worker's identity
// (PERMISSION_DENIED: its generation was superseded) makes it stop.
//
// Thread-safety: the sink methods are called from the training thread; two background threads send.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dtrn/coordinator/client.h"
#include "dtrn/train/commit_barrier.h"
#include "dtrn/train/telemetry.h"
#include "dtrn/v1/coordinator.grpc.pb.h"

namespace dtrn::coordinator {

struct WorkerIdentity {
  ClientOptions coordinator;
  v1::WorkerRef worker;
  std::string host;
};

// The identity in DTRN_* (above); nullopt-like NotFound when DTRN_COORDINATOR is unset (a plain run).
StatusOr<WorkerIdentity> worker_identity_from_env();

class WorkerClient final : public train::TelemetrySink {
 public:
  // Registers (retrying for up to `register_timeout_s`) and starts the background threads.
  static StatusOr<std::unique_ptr<WorkerClient>> Connect(const WorkerIdentity& identity,
                                                         double register_timeout_s = 30);
  ~WorkerClient() override;  // sends what is queued (for up to 5 s) and a last heartbeat
  const v1::Rendezvous& rendezvous() const { return rendezvous_; }
  // The job's checkpoint commit through this coordinator (coordinator_barrier.h), on this client's
  // connection; independent of the client's lifetime.
  std::unique_ptr<train::CommitBarrier> commit_barrier() const;

  void on_phase(const std::string& phase, int64_t step) override;
  void on_step(const train::StepStats& stats) override;
  void on_checkpoint(const train::CheckpointStats& checkpoint) override;
  bool stop_requested() override { return stop_.load(); }

 private:
  explicit WorkerClient(const WorkerIdentity& identity);
  void heartbeat_loop();
  void stats_loop();
  bool send_heartbeat();

  WorkerIdentity identity_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Workers::Stub> stub_;
  v1::Rendezvous rendezvous_;
  std::atomic<bool> stop_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  bool closing_ = false;
  bool heartbeat_due_ = false;
  int64_t step_ = 0;
  train::CheckpointStats checkpoint_;  // the newest committed checkpoint (step 0: none)
  std::string phase_ = "start";
  std::deque<v1::StepStats> queue_;
  std::thread heartbeat_thread_, stats_thread_;
};

}  // namespace dtrn::coordinator
