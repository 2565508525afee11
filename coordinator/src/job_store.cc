#include "dtrn/coordinator/job_store.h"

#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dtrn/runtime/file_io.h"

namespace dtrn::coordinator {
namespace fs = std::filesystem;
namespace {

std::string to_hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

}  // namespace

Status JobStore::init() {
  std::error_code ec;
  for (const char* sub : {"/jobs", "/runs"}) {
    fs::create_directories(dir_ + sub, ec);
    if (ec) return Status::IoError(dir_ + sub + ": cannot create: " + ec.message());
  }
  return Status::Ok();
}

Status JobStore::save(const JobRecordData& record) {
  std::string job_json;
  if (!google::protobuf::util::MessageToJsonString(record.job, &job_json).ok()) {
    return Status::Internal("job " + record.job.id() + ": cannot encode as JSON");
  }
  nlohmann::json j = {{"job", nlohmann::json::parse(job_json)}, {"unique_id", to_hex(record.unique_id)}};
  j["workers"] = nlohmann::json::array();
  for (const auto& w : record.workers) {
    j["workers"].push_back({{"rank", w.rank}, {"agent_id", w.agent_id}, {"host", w.host}, {"secret", w.secret},
                            {"state", w.state}});
  }
  const std::string path = dir_ + "/jobs/" + record.job.id() + ".json";
  DTRN_RETURN_IF_ERROR(write_file_atomic(path, j.dump(1)));
  return sync_dir(dir_ + "/jobs");
}

StatusOr<std::vector<JobRecordData>> JobStore::load_all() const {
  std::vector<JobRecordData> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ + "/jobs", ec)) {
    if (entry.path().extension() != ".json") continue;
    const std::string path = entry.path().string();
    auto text = read_file(path);
    if (!text.ok()) return text.status();
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.contains("job")) return Status::DataLoss(path + ": not a dtrn job record");
    JobRecordData r;
    if (!google::protobuf::util::JsonStringToMessage(j["job"].dump(), &r.job).ok()) {
      return Status::DataLoss(path + ": the job does not parse as dtrn.v1.Job");
    }
    r.unique_id = from_hex(j.value("unique_id", ""));
    for (const auto& w : j.value("workers", nlohmann::json::array())) {
      r.workers.push_back({w.value("rank", 0), w.value("agent_id", ""), w.value("host", ""),
                           w.value("secret", ""), w.value("state", "")});
    }
    out.push_back(std::move(r));
  }
  if (ec) return Status::IoError(dir_ + "/jobs: " + ec.message());
  return out;
}

Status JobStore::append_log(const std::string& job_id, const std::string& line) {
  std::ofstream out(dir_ + "/jobs/" + job_id + ".log", std::ios::app);
  out << line << "\n";
  if (!out) return Status::IoError(dir_ + "/jobs/" + job_id + ".log: cannot append");
  return Status::Ok();
}

}  // namespace dtrn::coordinator
