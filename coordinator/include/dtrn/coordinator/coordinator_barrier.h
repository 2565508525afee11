// CoordinatorBarrier: the CommitBarrier (dtrn/train/commit_barrier.h) of a job the coordinator
// runs. Each phase of a save is one ReportShard report (Note [Commit through the coordinator] in
// coordinator/src/checkpoint_reports.cc), sent by the checkpoint writer's thread itself and
// repeated while the coordinator answers PENDING, so the training thread serves nothing (its
// RankBarrier rounds then only tell when every rank's writer has finished). The coordinator records
// every save's reports, decides its outcome for all ranks, and learns of a committed checkpoint
// from rank 0's COMMIT report. A coordinator unreachable for kUnreachableS fails the save
// (dtrn::Error), as abandon() does.
//
// Thread-safety: prepare()/report()/finish() from one writer thread; abandon() from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "dtrn/coordinator/worker_client.h"
#include "dtrn/train/commit_barrier.h"

namespace dtrn::coordinator {

class CoordinatorBarrier final : public train::CommitBarrier {
 public:
  static constexpr double kUnreachableS = 60;

  // `world`: the job's ranks (Rendezvous.world_size).
  CoordinatorBarrier(WorkerIdentity identity, const std::shared_ptr<grpc::Channel>& channel,
                     int64_t world);

  int64_t rank() const override { return identity_.worker.rank(); }
  int64_t world() const override { return world_; }
  train::Vote prepare(int64_t step, const train::Vote& rank0) override;
  std::vector<train::Vote> report(int64_t step, const train::Vote& mine) override;
  train::Vote finish(int64_t step, const train::Vote& rank0) override;
  void abandon() override { abandoned_ = true; }

 private:
  // Sends the report until the coordinator decides the phase.
  v1::ShardReportResponse send(const v1::ShardReport& report);
  v1::ShardReport make_report(v1::CommitPhase phase, int64_t step, const train::Vote& vote) const;

  WorkerIdentity identity_;
  std::unique_ptr<v1::Workers::Stub> stub_;
  int64_t world_;
  std::string save_id_;     // of the save in progress, from its PREPARE
  train::Vote shard_vote_;  // this rank's, repeated in its COMMIT reports
  std::atomic<bool> abandoned_{false};
};

}  // namespace dtrn::coordinator
