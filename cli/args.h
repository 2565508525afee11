// A small command-line reader shared by every subcommand: `--name value`, `--name=value`, repeated
// flags collected in order, boolean switches, and positional arguments. Unknown flags are an error that
// names the flag, so a typo never silently changes a run.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "dtrn/runtime/status.h"

namespace dtrn::cli {

struct FlagSpec {
  std::string name;  // without dashes
  bool takes_value = true;
  bool repeated = false;  // a flag given several times, or followed by several values (--input a b c)
};

class Args {
 public:
  // Parses argv[first..argc). Fails on unknown or malformed flags.
  static StatusOr<Args> Parse(int argc, char** argv, int first, const std::vector<FlagSpec>& specs);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> get(const std::string& name) const;
  std::string get_or(const std::string& name, const std::string& fallback) const;
  const std::vector<std::string>& all(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // Parses an integer flag; a non-number is an InvalidArgument naming the flag.
  StatusOr<long long> get_int(const std::string& name, long long fallback) const;

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Prints "dtrn <command>: <message>" to stderr and returns the exit code 1 (or 2 for usage errors, whose
// one line points at --help instead of printing the whole usage).
int fail(const std::string& command, const std::string& message);
int usage_error(const std::string& command, const std::string& message);

}  // namespace dtrn::cli
