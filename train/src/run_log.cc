#include "run_log.h"

#include <ctime>
#include <iostream>

namespace dtrn::train {

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

RunLog::RunLog(const std::string& path, bool quiet) : file_(path, std::ios::app), quiet_(quiet) {}

void RunLog::line(const std::string& text) {
  if (!quiet_) std::cout << text << std::endl;
  file_ << utc_timestamp() << " " << text << "\n";
  file_.flush();
}

void RunLog::record(const std::string& text) {
  file_ << utc_timestamp() << " " << text << "\n";
  file_.flush();
}

void RunLog::failure(const std::string& path, const std::string& message) {
  std::ofstream(path, std::ios::app) << utc_timestamp() << " error: " << message << "\n";
}

}  // namespace dtrn::train
