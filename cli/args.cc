#include "args.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace dtrn::cli {

StatusOr<Args> Args::Parse(int argc, char** argv, int first, const std::vector<FlagSpec>& specs) {
  std::map<std::string, const FlagSpec*> by_name;
  for (const auto& s : specs) by_name[s.name] = &s;
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string token = argv[i];
    if (token.rfind("--", 0) != 0 || token.size() == 2) {
      args.positional_.push_back(token);
      continue;
    }
    std::string name = token.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = by_name.find(name);
    if (it == by_name.end()) return Status::InvalidArgument("unknown flag --" + name);
    const FlagSpec& spec = *it->second;
    auto& slot = args.values_[name];
    if (!spec.takes_value) {
      if (inline_value) return Status::InvalidArgument("flag --" + name + " takes no value");
      slot.push_back("true");
      continue;
    }
    if (inline_value) {
      slot.push_back(*inline_value);
      continue;
    }
    if (i + 1 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0) {
      return Status::InvalidArgument("flag --" + name + " needs a value");
    }
    slot.push_back(argv[++i]);
    // A repeated flag also swallows following plain words: --input a.txt b.txt
    while (spec.repeated && i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      slot.push_back(argv[++i]);
    }
    if (!spec.repeated && slot.size() > 1) {
      return Status::InvalidArgument("flag --" + name + " given more than once");
    }
  }
  return args;
}

std::optional<std::string> Args::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::string Args::get_or(const std::string& name, const std::string& fallback) const {
  return get(name).value_or(fallback);
}

const std::vector<std::string>& Args::all(const std::string& name) const {
  static const std::vector<std::string> kEmpty;
  auto it = values_.find(name);
  return it == values_.end() ? kEmpty : it->second;
}

StatusOr<long long> Args::get_int(const std::string& name, long long fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  char* end = nullptr;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0') {
    return Status::InvalidArgument("flag --" + name + " expects an integer, got '" + *v + "'");
  }
  return x;
}

int fail(const std::string& command, const std::string& message) {
  std::cerr << "dtrn " << command << ": " << message << "\n";
  return 1;
}

int usage_error(const std::string& command, const std::string& message) {
  std::cerr << "dtrn " << command << ": " << message << " (dtrn " << command << " --help shows the usage)\n";
  return 2;
}

}  // namespace dtrn::cli
