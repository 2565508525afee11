// What a run tells a person: every line goes to stdout (unless quiet) and to RUN/train.log, where each
// line starts with its UTC time ("2026-11-28T19:42:05Z "), so a log read after the fact says when things
// happened. record() and failure() write to train.log only what the caller already said on stderr (a
// warning from before the log existed, a fatal error). One object per run; not thread-safe.
#pragma once

#include <fstream>
#include <string>

namespace dtrn::train {

class RunLog {
 public:
  RunLog(const std::string& path, bool quiet);
  void line(const std::string& text);
  // To train.log only: what was already said on stderr before the log existed.
  void record(const std::string& text);

  // Appends "error: <message>" to the log file at `path`.
  static void failure(const std::string& path, const std::string& message);

 private:
  std::ofstream file_;
  bool quiet_;
};

// "2026-11-28T19:42:05Z": now, in UTC.
std::string utc_timestamp();

}  // namespace dtrn::train
