// Real processes for the coordinator tests: start `dtrn` subcommands with their output in a log file,
// wait for a line to appear, run a command to completion, find Debian binaries. Header-only; POSIX.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace dtrn::coordinator::testing {

inline std::string find_binary(const std::string& name) {
  for (const char* dir : {"/usr/bin/", "/usr/local/bin/", "/bin/"}) {
    const std::string p = std::string(dir) + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

inline std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("dtrn-coordinator-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A child process that is killed (SIGKILL) when this object goes, or when the test process dies.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log,
        const std::vector<std::pair<std::string, std::string>>& env = {}, const std::string& stdin_path = "")
      : log_(log) {
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      FILE* f = std::fopen(log.c_str(), "a");
      if (f) {
        ::dup2(fileno(f), 1);
        ::dup2(fileno(f), 2);
      }
      if (!stdin_path.empty()) {
        FILE* in = std::fopen(stdin_path.c_str(), "r");
        if (in) ::dup2(fileno(in), 0);
      }
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Child() { kill(SIGKILL); }
  pid_t pid() const { return pid_; }
  void kill(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    if (signal == SIGKILL || signal == SIGTERM) wait();
  }
  // The exit status (or 128 + signal); waits.
  int wait() {
    if (pid_ <= 0) return status_;
    int s = 0;
    ::waitpid(pid_, &s, 0);
    pid_ = -1;
    status_ = WIFEXITED(s) ? WEXITSTATUS(s) : 128 + WTERMSIG(s);
    return status_;
  }
  // Waits up to `timeout_s` for `pattern` in the log; returns the first match's group 1 (or whole match).
  std::string wait_for(const std::string& pattern, double timeout_s) const {
    const std::regex re(pattern);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      std::smatch m;
      const std::string text = slurp(log_);
      if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "";
  }
  std::string output() const { return slurp(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int status_ = -1;
};

struct CommandResult {
  int code = -1;
  std::string output;
};

// Runs argv to completion (stdin from `stdin_path` when given) and returns its status and output.
inline CommandResult run_command(const std::vector<std::string>& argv, const std::string& stdin_path = "") {
  static int runs = 0;
  const std::string log = temp_path("run-" + std::to_string(++runs) + ".log");
  Child child(argv, log, {}, stdin_path);
  CommandResult r;
  r.code = child.wait();
  r.output = slurp(log);
  return r;
}

}  // namespace dtrn::coordinator::testing
