// The coordinator's state directory:
//   DIR/jobs/<id>.json   one file per job (JobRecordData as JSON), replaced atomically on every change
//   DIR/jobs/<id>.log    the job log: state changes, failures, starvation events, one line each
//   DIR/runs/<id>/       the default run directory of a job's workers
// A coordinator restarted on the same directory reads every <id>.json back. Thread-compatible: the
// coordinator calls it under its own lock.
#pragma once

#include <string>
#include <vector>

#include "dtrn/runtime/status.h"
#include "dtrn/v1/coordinator.pb.h"

namespace dtrn::coordinator {

// What must survive a coordinator restart: the job as users see it (without live worker data) and the
// placement and secrets of its current generation, so that live workers are recognized again.
struct PersistedWorker {
  int rank = 0;
  std::string agent_id, host, secret, state;
};
struct JobRecordData {
  v1::Job job;  // workers[] left empty
  std::vector<PersistedWorker> workers;
  std::string unique_id;  // the generation's rendezvous id (raw bytes)
};

class JobStore {
 public:
  explicit JobStore(std::string dir) : dir_(std::move(dir)) {}
  Status init();  // creates DIR/jobs and DIR/runs
  Status save(const JobRecordData& record);
  StatusOr<std::vector<JobRecordData>> load_all() const;
  Status append_log(const std::string& job_id, const std::string& line);
  std::string default_run_dir(const std::string& job_id) const { return dir_ + "/runs/" + job_id; }

 private:
  std::string dir_;
};

}  // namespace dtrn::coordinator
