// The commit of a job's checkpoints through the coordinator: ReportShard (coordinator.proto), the
// coordinator's side of CoordinatorBarrier (coordinator_barrier.h).
//
// Note [Commit through the coordinator]
// Each generation keeps one save record, its ranks' newest save. Rank 0's PREPARE report starts it
// (the step and the save id, or why rank 0 could not prepare the folder); each rank's SHARD report
// adds its vote; once every rank of the generation voted, the save is agreed (all ok) or abandoned
// (the lowest failing rank's message). Rank 0's COMMIT report says whether the manifest is in
// place: only then is the checkpoint the job's (Job.checkpoint_step, "checkpoint of step N
// committed" in the log and on WatchJob, and the step a restart resumes from). Deciding on every
// rank's vote, not the first failure, keeps the commit's guarantee that rank 0 cleans up only after
// every rank stopped writing. A call is answered from the record: a rank waits (commit_wait_s per
// call, then PENDING) for rank 0's PREPARE or COMMIT, or for the others' SHARD votes. A replaced
// generation, or one with a rank that failed or stopped, answers ABANDONED, so no rank waits for
// ranks that are gone; the files of an abandoned save are leftovers the next start removes
// (train/src/checkpoint_commit.h). Records are not persisted. A coordinator restarted during a save
// adopts it from the first SHARD or COMMIT report of a save it does not hold (a rank reports those
// only after rank 0's PREPARE was agreed), and the ranks' repeated reports rebuild the rest: every
// rank repeats its SHARD vote until the phase is decided and again in its COMMIT reports (so rank
// 0, whose answer a restart lost, gets its decision even when the others have moved on), and once
// rank 0 reported COMMIT (only ever after a decided SHARD phase) a rank still repeating its vote
// learns the outcome from it. So a coordinator restart fails no save. A generation being stopped
// with all its ranks alive still commits: SIGTERM makes every rank save, and the restart resumes
// from that checkpoint.
#include <algorithm>

#include "dtrn/coordinator/coordinator.h"

namespace dtrn::coordinator {
namespace {

constexpr size_t kMaxDetail = 16 << 10;  // a shard's entry is about 200 bytes; an error one line
constexpr size_t kMaxSaveId = 64;

const char* phase_label(v1::CommitPhase phase) {
  switch (phase) {
    case v1::COMMIT_PHASE_PREPARE:
      return "prepare";
    case v1::COMMIT_PHASE_SHARD:
      return "shard";
    default:
      return "commit";
  }
}

}  // namespace

void Coordinator::note_checkpoint(JobRecord& job, int64_t step, const std::string& source) {
  if (step <= job.data.job.checkpoint_step()) return;
  job.data.job.set_checkpoint_step(step);
  persist(job);
  log_event(job, "checkpoint of step " + std::to_string(step) + " committed (" + source + ")");
}

void Coordinator::end_save(JobRecord& job, bool committed, const std::string& why) {
  SaveRecord& save = job.save;
  if (save.ended) return;
  save.ended = true;
  checkpoint_saves_
      ->add({{"job", job.data.job.id()}, {"outcome", committed ? "committed" : "abandoned"}})
      .inc();
  if (committed) {
    note_checkpoint(job, save.step,
                    "the reports of its " + std::to_string(save.votes.size()) + " ranks agreed");
  } else {
    log_event(job, "checkpoint of step " + std::to_string(save.step) + " abandoned: " + why);
  }
}

StatusOr<v1::ShardReportResponse> Coordinator::report_shard(const v1::ShardReport& report) {
  std::unique_lock<std::mutex> lock(mu_);
  JobRecord* job = nullptr;
  auto slot = authorize_worker(report.worker(), &job);
  if (!slot.ok()) return slot.status();
  const auto invalid = [&](const std::string& why) {
    rejected_->add({{"reason", "invalid_argument"}}).inc();
    return Status::InvalidArgument("ReportShard: " + why);
  };
  const v1::CommitPhase phase = report.phase();
  if (phase != v1::COMMIT_PHASE_PREPARE && phase != v1::COMMIT_PHASE_SHARD &&
      phase != v1::COMMIT_PHASE_COMMIT) {
    return invalid("unknown phase " + std::to_string(phase));
  }
  if (report.step() < 0) return invalid("negative step " + std::to_string(report.step()));
  if (report.detail().size() > kMaxDetail) return invalid("detail longer than 16 KiB");
  if (report.save_id().size() > kMaxSaveId) return invalid("save_id longer than 64 bytes");
  const bool announces =
      phase == v1::COMMIT_PHASE_PREPARE && report.worker().rank() == 0 && report.ok();
  if ((phase != v1::COMMIT_PHASE_PREPARE || announces) && report.save_id().empty()) {
    return invalid("no save_id");
  }
  record_report(*job, report);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(options_.commit_wait_s));
  v1::ShardReportResponse response = answer_report(*job, report);
  while (response.outcome() == v1::COMMIT_OUTCOME_PENDING &&
         commit_cv_.wait_until(lock, deadline) == std::cv_status::no_timeout) {
    response = answer_report(*job, report);
  }
  if (response.outcome() == v1::COMMIT_OUTCOME_PENDING) response = answer_report(*job, report);
  return response;
}

void Coordinator::record_report(JobRecord& job, const v1::ShardReport& report) {
  SaveRecord& save = job.save;
  const int rank = report.worker().rank();
  bool this_save = save.step == report.step() && save.save_id == report.save_id();
  if (!this_save && report.phase() != v1::COMMIT_PHASE_PREPARE && report.step() >= save.step) {
    save = SaveRecord{};  // adopted: this coordinator restarted during the save
    save.step = report.step();
    save.save_id = report.save_id();
    save.prepared = true;
    save.votes.assign(job.data.job.world_size(), std::nullopt);
    this_save = true;
  }
  v1::ShardVote vote;
  vote.set_ok(report.ok());
  vote.set_detail(report.detail());
  switch (report.phase()) {
    case v1::COMMIT_PHASE_PREPARE:
      if (rank != 0 || this_save)
        return;  // the other ranks only wait; a repeated report changes nothing
      save = SaveRecord{};
      save.step = report.step();
      save.save_id = report.save_id();
      save.prepared = report.ok();
      save.votes.assign(job.data.job.world_size(), std::nullopt);
      if (!save.prepared) {
        save.message = report.detail();
        end_save(job, false, save.message);
      }
      break;
    case v1::COMMIT_PHASE_SHARD:
      if (!this_save || !add_vote(job, rank, vote)) return;
      break;
    default:  // COMMIT; the other ranks' reports repeat their SHARD votes
      if (rank != 0) {
        if (!this_save || !add_vote(job, rank, vote)) return;
        break;
      }
      if (!this_save || save.commit != v1::COMMIT_OUTCOME_PENDING) return;
      save.commit = report.ok() ? v1::COMMIT_OUTCOME_AGREED : v1::COMMIT_OUTCOME_ABANDONED;
      save.message = report.ok() ? "" : report.detail();
      end_save(job, report.ok(), save.message);
      break;
  }
  checkpoint_reports_->add({{"job", job.data.job.id()}, {"phase", phase_label(report.phase())}})
      .inc();
  commit_cv_.notify_all();
}

bool Coordinator::add_vote(JobRecord& job, int rank, const v1::ShardVote& vote) {
  SaveRecord& save = job.save;
  if (!save.prepared || save.votes[rank]) return false;
  save.votes[rank] = vote;
  if (std::any_of(save.votes.begin(), save.votes.end(),
                  [](const auto& v) { return !v.has_value(); }))
    return true;
  save.shard = v1::COMMIT_OUTCOME_AGREED;
  for (size_t r = 0; r < save.votes.size() && save.shard == v1::COMMIT_OUTCOME_AGREED; ++r) {
    if (save.votes[r]->ok()) continue;
    save.shard = v1::COMMIT_OUTCOME_ABANDONED;
    save.message =
        "rank " + std::to_string(r) + " could not write its shard: " + save.votes[r]->detail();
    end_save(job, false, save.message);
  }
  return true;
}

v1::ShardReportResponse Coordinator::answer_report(const JobRecord& job,
                                                   const v1::ShardReport& report) const {
  v1::ShardReportResponse r;
  const auto abandoned = [&r](const std::string& why) {
    r.set_outcome(v1::COMMIT_OUTCOME_ABANDONED);
    r.set_message(why);
    return r;
  };
  const v1::Job& j = job.data.job;
  if (j.generation() != report.worker().generation()) {
    return abandoned("generation " + std::to_string(report.worker().generation()) + " of job " +
                     j.id() + " was replaced");
  }
  // A generation told to stop may still save (a stop signal saves); one whose rank is gone cannot.
  for (const auto& w : job.workers) {
    if (w.state == "failed" || w.state == "stopped") {
      return abandoned("rank " + std::to_string(w.rank) + " of job " + j.id() + " is " + w.state +
                       (j.message().empty() ? "" : " (" + j.message() + ")"));
    }
  }
  const SaveRecord& save = job.save;
  const std::string step = std::to_string(report.step());
  r.set_outcome(v1::COMMIT_OUTCOME_PENDING);
  if (report.phase() == v1::COMMIT_PHASE_PREPARE) {
    if (save.step < report.step()) return r;  // rank 0 has not prepared it yet
    if (save.step > report.step())
      return abandoned("rank 0 began the save of step " + std::to_string(save.step));
    if (!save.prepared) return abandoned(save.message);
    r.set_outcome(v1::COMMIT_OUTCOME_AGREED);
    r.set_save_id(save.save_id);
    return r;
  }
  if (save.step != report.step() || save.save_id != report.save_id()) {
    return abandoned("save " + report.save_id() + " of step " + step +
                     " was replaced by a save of step " + std::to_string(save.step));
  }
  if (report.phase() == v1::COMMIT_PHASE_SHARD) {
    if (save.shard == v1::COMMIT_OUTCOME_PENDING) {
      // Decided before a restart of this coordinator, and rank 0 has reported its outcome since.
      if (save.commit == v1::COMMIT_OUTCOME_PENDING || report.worker().rank() == 0) return r;
      r.set_outcome(save.commit);
      r.set_message(save.message);
      return r;
    }
    r.set_outcome(save.shard);
    r.set_message(save.shard == v1::COMMIT_OUTCOME_ABANDONED ? save.message : "");
    if (report.worker().rank() == 0) {
      for (const auto& v : save.votes) *r.add_votes() = *v;
    }
    return r;
  }
  if (save.commit == v1::COMMIT_OUTCOME_PENDING) return r;
  r.set_outcome(save.commit);
  r.set_message(save.message);
  return r;
}

}  // namespace dtrn::coordinator
