#include "dtrn/train/job_config.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <functional>
#include <map>
#include <set>

#include "dtrn/runtime/file_io.h"

namespace dtrn::train {
namespace {

// One entry per key: how to read it from a YAML scalar and how to write it back.
struct Key {
  std::function<Status(const YAML::Node&, const std::string& name)> read;
  std::function<std::string()> text;  // the value as config.yaml writes it
  bool required = false;              // no default: the config must give it
};

template <typename T>
Status read_scalar(const YAML::Node& node, const std::string& name, T* out) {
  if (!node.IsScalar()) return Status::InvalidArgument(name + ": expected a scalar value");
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception&) {
    const char* what = std::is_same_v<T, std::string> ? "a string"
                       : std::is_floating_point_v<T> ? "a number"
                       : std::is_unsigned_v<T>       ? "a non-negative integer"
                                                     : "an integer";
    return Status::InvalidArgument(name + ": expected " + what + ", got '" + node.Scalar() + "'");
  }
  return Status::Ok();
}

// The shortest text that reads back as the same double (3e-3 is written 0.003, never
// 0.0030000000000000001), so config.yaml shows the values as a person wrote them.
std::string shortest_text(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

template <typename T>
Key key(T* field, bool required = false) {
  auto text = [field]() -> std::string {
    if constexpr (std::is_same_v<T, std::string>) {
      return *field;
    } else if constexpr (std::is_floating_point_v<T>) {
      return shortest_text(*field);
    } else {
      return std::to_string(*field);
    }
  };
  return {[field](const YAML::Node& n, const std::string& name) { return read_scalar(n, name, field); },
          text, required};
}

template <typename T>
Key required_key(T* field) {
  return key(field, true);
}

using Table = std::map<std::string, std::map<std::string, Key>>;

// Sections in the order config.yaml writes them.
constexpr const char* kSections[] = {"model", "routing", "train", "parallel", "data", "checkpoint", "telemetry"};

// The one list of every section and key: adding a key means adding one line here.
Table make_table(JobConfig* c) {
  Table t;
  auto& m = t["model"];
  m["d_model"] = required_key(&c->model.d_model);
  m["n_layers"] = required_key(&c->model.n_layers);
  m["n_heads"] = required_key(&c->model.n_heads);
  m["n_kv_heads"] = required_key(&c->model.n_kv_heads);
  m["d_ff"] = required_key(&c->model.d_ff);
  m["vocab_size"] = key(&c->model.vocab_size);
  m["seq_len"] = required_key(&c->model.seq_len);
  m["layout"] = key(&c->model.layout);
  m["norm_eps"] = key(&c->model.norm_eps);
  m["rope_theta"] = key(&c->model.rope_theta);
  auto& r = t["routing"];
  r["sparsity_weight"] = key(&c->routing.sparsity_weight);
  r["balance_weight"] = key(&c->routing.balance_weight);
  r["target_fraction"] = key(&c->routing.target_fraction);
  r["starvation_threshold"] = key(&c->routing.starvation_threshold);
  r["starvation_window"] = key(&c->routing.starvation_window);
  r["bias_rate"] = key(&c->routing.bias_rate);
  r["bias_gamma"] = key(&c->routing.bias_gamma);
  r["bias_path"] = key(&c->routing.bias_path);
  r["balance_on"] = key(&c->routing.balance_on);
  r["balance_tau"] = key(&c->routing.balance_tau);
  r["balance_multiplier_lr"] = key(&c->routing.balance_multiplier_lr);
  r["z_loss_weight"] = key(&c->routing.z_loss_weight);
  r["fallback"] = key(&c->routing.fallback);
  r["fallback_low"] = key(&c->routing.fallback_low);
  r["fallback_high"] = key(&c->routing.fallback_high);
  auto& tr = t["train"];
  tr["steps"] = required_key(&c->train.steps);
  tr["micro_batch"] = required_key(&c->train.micro_batch);
  tr["global_batch"] = required_key(&c->train.global_batch);
  tr["lr"] = key(&c->train.lr);
  tr["min_lr"] = key(&c->train.min_lr);
  tr["warmup_steps"] = key(&c->train.warmup_steps);
  tr["weight_decay"] = key(&c->train.weight_decay);
  tr["clip"] = key(&c->train.clip);
  tr["seed"] = key(&c->train.seed);
  tr["device"] = key(&c->train.device);
  tr["precision"] = key(&c->train.precision);
  tr["eval_every"] = key(&c->train.eval_every);
  tr["eval_batches"] = key(&c->train.eval_batches);
  t["parallel"]["dp"] = key(&c->parallel.dp);
  t["parallel"]["tp"] = key(&c->parallel.tp);
  t["parallel"]["zero"] = key(&c->parallel.zero);
  t["parallel"]["bucket_mb"] = key(&c->parallel.bucket_mb);
  t["parallel"]["timeout_s"] = key(&c->parallel.timeout_s);
  t["data"]["path"] = required_key(&c->data.path);
  t["checkpoint"]["every"] = key(&c->checkpoint.every);
  t["checkpoint"]["keep"] = key(&c->checkpoint.keep);
  t["checkpoint"]["keep_every"] = key(&c->checkpoint.keep_every);
  t["telemetry"]["every"] = key(&c->telemetry.every);
  return t;
}

// Reads the YAML document into the table; `given` collects the "section.key" names it sets. A section
// or key given twice is an error: YAML readers disagree on which one wins, so the file would not say
// what the run does.
Status apply_node(const YAML::Node& root, Table& table, std::set<std::string>* given) {
  if (!root || root.IsNull()) return Status::Ok();
  if (!root.IsMap()) return Status::InvalidArgument("config: the top level must be a mapping of sections");
  std::set<std::string> sections;
  for (const auto& section : root) {
    const std::string sname = section.first.as<std::string>();
    auto sit = table.find(sname);
    if (sit == table.end()) return Status::InvalidArgument(sname + ": unknown section");
    if (!sections.insert(sname).second) {
      return Status::InvalidArgument(sname + ": section given twice (merge the two into one)");
    }
    if (section.second.IsNull()) continue;
    if (!section.second.IsMap()) return Status::InvalidArgument(sname + ": expected a mapping of keys");
    for (const auto& entry : section.second) {
      const std::string kname = entry.first.as<std::string>();
      auto kit = sit->second.find(kname);
      if (kit == sit->second.end()) return Status::InvalidArgument(sname + "." + kname + ": unknown key");
      if (!given->insert(sname + "." + kname).second) {
        return Status::InvalidArgument(sname + "." + kname + ": key given twice (keep one)");
      }
      DTRN_RETURN_IF_ERROR(kit->second.read(entry.second, sname + "." + kname));
    }
  }
  return Status::Ok();
}

Status apply_override(const std::string& text, Table& table, std::set<std::string>* given) {
  const auto eq = text.find('=');
  const auto dot = text.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq) {
    return Status::InvalidArgument("--set " + text + ": expected section.key=value");
  }
  const std::string section = text.substr(0, dot), name = text.substr(dot + 1, eq - dot - 1);
  auto sit = table.find(section);
  if (sit == table.end()) return Status::InvalidArgument(section + ": unknown section (in --set " + text + ")");
  auto kit = sit->second.find(name);
  if (kit == sit->second.end()) {
    return Status::InvalidArgument(section + "." + name + ": unknown key (in --set " + text + ")");
  }
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(section + "." + name + ": cannot parse value in --set " + text);
  }
  if (!value.IsScalar()) value = YAML::Node(text.substr(eq + 1));
  given->insert(section + "." + name);
  return kit->second.read(value, section + "." + name);
}

// A required key the config does not give reads as "missing", not as the range error its zero default
// would cause.
Status check_required(const Table& table, const std::set<std::string>& given) {
  for (const auto& [section, keys] : table) {
    for (const auto& [name, k] : keys) {
      const std::string full = section + "." + name;
      if (k.required && !given.count(full)) {
        return Status::InvalidArgument(full + ": missing (a required key; docs/config.md lists them)");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<JobConfig> parse_job_config(const std::string& yaml_text, const std::vector<std::string>& overrides) {
  JobConfig config;
  config.routing.balance_weight = kDefaultBalanceWeight;
  config.routing.bias_rate = kDefaultBiasRate;
  Table table = make_table(&config);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("config: YAML syntax error at line " + std::to_string(e.mark.line + 1) +
                                   ": " + e.msg);
  }
  std::set<std::string> given;
  DTRN_RETURN_IF_ERROR(apply_node(root, table, &given));
  for (const std::string& o : overrides) DTRN_RETURN_IF_ERROR(apply_override(o, table, &given));
  DTRN_RETURN_IF_ERROR(check_required(table, given));
  DTRN_RETURN_IF_ERROR(validate(config));
  return config;
}

StatusOr<JobConfig> load_job_config(const std::string& path, const std::vector<std::string>& overrides) {
  auto text = read_file(path);
  if (!text.ok()) return Status(text.status().code(), text.status().message() + " (the config file)");
  auto c = parse_job_config(*text, overrides);
  if (!c.ok()) return Status(c.status().code(), path + ": " + c.status().message());
  return c;
}

Status validate(const JobConfig& c) {
  DTRN_RETURN_IF_ERROR(model::validate(c.model));
  DTRN_RETURN_IF_ERROR(model::validate(c.routing));
  const TrainConfig& t = c.train;
  auto positive = [](const char* name, int64_t v) {
    return v > 0 ? Status::Ok()
                 : Status::InvalidArgument(std::string(name) + " must be positive, got " + std::to_string(v));
  };
  DTRN_RETURN_IF_ERROR(positive("train.steps", t.steps));
  DTRN_RETURN_IF_ERROR(positive("train.micro_batch", t.micro_batch));
  DTRN_RETURN_IF_ERROR(positive("train.global_batch", t.global_batch));
  DTRN_RETURN_IF_ERROR(positive("parallel.dp", c.parallel.dp));
  DTRN_RETURN_IF_ERROR(positive("parallel.tp", c.parallel.tp));
  DTRN_RETURN_IF_ERROR(positive("telemetry.every", c.telemetry.every));
  if (c.parallel.zero != 0 && c.parallel.zero != 1) {
    return Status::InvalidArgument("parallel.zero: " + std::to_string(c.parallel.zero) +
                                   " is not a ZeRO stage dtrn has (0 or 1)");
  }
  if (!(c.parallel.bucket_mb > 0)) return Status::InvalidArgument("parallel.bucket_mb must be positive");
  if (!(c.parallel.timeout_s > 0)) return Status::InvalidArgument("parallel.timeout_s must be positive");
  if (t.global_batch % (t.micro_batch * c.parallel.dp) != 0) {
    return Status::InvalidArgument("train.global_batch: " + std::to_string(t.global_batch) +
                                   " is not divisible by train.micro_batch * parallel.dp = " +
                                   std::to_string(t.micro_batch * c.parallel.dp));
  }
  DTRN_RETURN_IF_ERROR(model::validate_tensor_parallel(c.model, c.parallel.tp));
  if (!(t.lr > 0)) return Status::InvalidArgument("train.lr must be positive");
  if (!(t.min_lr >= 0 && t.min_lr <= t.lr)) return Status::InvalidArgument("train.min_lr must be in [0, train.lr]");
  if (t.warmup_steps < 0) return Status::InvalidArgument("train.warmup_steps must be >= 0");
  if (t.warmup_steps > t.steps) {
    return Status::InvalidArgument("train.warmup_steps: " + std::to_string(t.warmup_steps) + " is more than train.steps " +
                                   std::to_string(t.steps) + " (the learning rate would never reach train.lr)");
  }
  if (!(t.weight_decay >= 0)) return Status::InvalidArgument("train.weight_decay must be >= 0");
  if (!(t.clip > 0)) return Status::InvalidArgument("train.clip must be positive");
  if (t.eval_every < 0) return Status::InvalidArgument("train.eval_every must be >= 0");
  if (t.eval_batches <= 0) return Status::InvalidArgument("train.eval_batches must be positive");
  if (t.device != "auto" && t.device != "cpu" && t.device != "cuda" && t.device.rfind("cuda:", 0) != 0) {
    return Status::InvalidArgument("train.device: '" + t.device + "' is not cpu, cuda, cuda:N or auto");
  }
  if (t.precision != "auto" && t.precision != "fp32" && t.precision != "bf16") {
    return Status::InvalidArgument("train.precision: '" + t.precision + "' is not fp32, bf16 or auto");
  }
  if (c.checkpoint.every < 0) return Status::InvalidArgument("checkpoint.every must be >= 0");
  if (c.checkpoint.keep < 0) return Status::InvalidArgument("checkpoint.keep must be >= 0");
  if (c.checkpoint.keep_every < 0) return Status::InvalidArgument("checkpoint.keep_every must be >= 0");
  if (c.data.path.empty()) return Status::InvalidArgument("data.path: missing (a `dtrn prep` output folder)");
  return Status::Ok();
}

std::string to_yaml(const JobConfig& config) {
  JobConfig copy = config;
  Table table = make_table(&copy);
  YAML::Emitter e;
  e << YAML::BeginMap;
  for (const char* section : kSections) {
    e << YAML::Key << section << YAML::Value << YAML::BeginMap;
    for (auto& [name, k] : table[section]) e << YAML::Key << name << YAML::Value << k.text();
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::vector<std::pair<std::string, std::string>> config_entries(const JobConfig& config) {
  JobConfig copy = config;
  Table table = make_table(&copy);
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* section : kSections) {
    for (auto& [name, k] : table[section]) out.emplace_back(std::string(section) + "." + name, k.text());
  }
  return out;
}

}  // namespace dtrn::train
