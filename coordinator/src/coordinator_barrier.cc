#include "dtrn/coordinator/coordinator_barrier.h"

#include <chrono>
#include <thread>

#include "dtrn/runtime/check.h"

namespace dtrn::coordinator {

CoordinatorBarrier::CoordinatorBarrier(WorkerIdentity identity,
                                       const std::shared_ptr<grpc::Channel>& channel, int64_t world)
    : identity_(std::move(identity)), stub_(v1::Workers::NewStub(channel)), world_(world) {}

v1::ShardReport CoordinatorBarrier::make_report(v1::CommitPhase phase, int64_t step,
                                                const train::Vote& vote) const {
  v1::ShardReport r;
  *r.mutable_worker() = identity_.worker;
  r.set_step(step);
  r.set_phase(phase);
  r.set_ok(vote.ok);
  if (phase == v1::COMMIT_PHASE_PREPARE) {
    // Rank 0's vote: the new save id, or why the folder could not be prepared.
    if (vote.ok) {
      r.set_save_id(vote.text);
    } else {
      r.set_detail(vote.text);
    }
  } else {
    r.set_save_id(save_id_);
    r.set_detail(vote.text);
  }
  return r;
}

v1::ShardReportResponse CoordinatorBarrier::send(const v1::ShardReport& report) {
  using Clock = std::chrono::steady_clock;
  auto reachable = Clock::now();
  while (true) {
    if (abandoned_) throw Error("the run stopped serving the checkpoint commit before it was done");
    grpc::ClientContext context;
    // The coordinator answers within its commit_wait_s (1 s): 10 s means it is stuck or gone.
    prepare_context(&context, identity_.coordinator, 10);
    v1::ShardReportResponse response;
    const grpc::Status s = stub_->ReportShard(&context, report, &response);
    if (s.ok()) {
      if (response.outcome() != v1::COMMIT_OUTCOME_PENDING) return response;
      reachable = Clock::now();
      continue;
    }
    const bool away = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                      s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!away || std::chrono::duration<double>(Clock::now() - reachable).count() > kUnreachableS) {
      throw Error("coordinator " + identity_.coordinator.address +
                  " refused the checkpoint report: " + describe(s));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // it restarts: report again
  }
}

train::Vote CoordinatorBarrier::prepare(int64_t step, const train::Vote& rank0) {
  const v1::ShardReportResponse r = send(make_report(v1::COMMIT_PHASE_PREPARE, step, rank0));
  if (r.outcome() != v1::COMMIT_OUTCOME_AGREED) return {false, r.message()};
  save_id_ = r.save_id();
  return {true, r.save_id()};
}

std::vector<train::Vote> CoordinatorBarrier::report(int64_t step, const train::Vote& mine) {
  shard_vote_ = mine;
  const v1::ShardReportResponse r = send(make_report(v1::COMMIT_PHASE_SHARD, step, mine));
  if (rank() != 0) return {};  // the outcome reaches them through finish(), as rank 0 words it
  // Every rank's votes, failures included: rank 0 words the outcome and removes this save's files.
  // Without them the coordinator abandoned the save for a reason outside it (a failed rank).
  if (r.votes_size() != world_) {
    throw Error("the coordinator abandoned the save of step " + std::to_string(step) + ": " +
                r.message());
  }
  std::vector<train::Vote> votes;
  for (const auto& v : r.votes()) votes.push_back({v.ok(), v.detail()});
  return votes;
}

train::Vote CoordinatorBarrier::finish(int64_t step, const train::Vote& rank0) {
  const v1::ShardReportResponse r =
      send(make_report(v1::COMMIT_PHASE_COMMIT, step, rank() == 0 ? rank0 : shard_vote_));
  save_id_.clear();
  if (r.outcome() == v1::COMMIT_OUTCOME_AGREED) return {true, ""};
  return {false, r.message()};
}

}  // namespace dtrn::coordinator
