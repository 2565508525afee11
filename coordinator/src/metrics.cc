#include "dtrn/coordinator/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "dtrn/runtime/check.h"

namespace dtrn::coordinator {
namespace {

// Text format 0.0.4 numbers: Go's ParseFloat syntax, with NaN, +Inf and -Inf spelled out; the shortest
// representation that reads back as the same double.
std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

// HELP text escapes backslash and newline; label values also escape the double quote.
std::string escape(const std::string& s, bool quote) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out += c;
  }
  return out;
}

std::string label_text(const Labels& labels, const std::string& extra_name = "", const std::string& extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    out += (first ? "" : ",") + k + "=\"" + escape(v, true) + "\"";
    first = false;
  }
  if (!extra_name.empty()) out += (first ? "" : ",") + extra_name + "=\"" + extra_value + "\"";
  return out + "}";
}

void header(std::string* out, const std::string& name, const std::string& help, const char* type) {
  *out += "# HELP " + name + " " + escape(help, false) + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Counter::inc(double v) {
  DTRN_ASSERT(v >= 0, "a counter only goes up");
  double cur = value_.load();
  while (!value_.compare_exchange_weak(cur, cur + v)) {
  }
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  DTRN_ASSERT(std::is_sorted(bounds_.begin(), bounds_.end()), "histogram bounds must ascend");
}

void Histogram::observe(double v) {
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();  // le: v <= bound
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += v;
}

Histogram::Snapshot Histogram::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot s;
  s.upper_bounds = bounds_;
  uint64_t running = 0;
  for (uint64_t c : counts_) s.cumulative.push_back(running += c);
  s.sum = sum_;
  s.count = running;
  return s;
}

void Registry::check_name(const std::string& name) const {
  bool ok = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0]));
  for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':');
  DTRN_ASSERT(ok, "bad metric name ", name);
  auto taken = [&](const auto& families) {
    return std::any_of(families.begin(), families.end(), [&](const auto& f) { return f->name_ == name; });
  };
  DTRN_ASSERT(!taken(counters_) && !taken(gauges_) && !taken(histograms_), "metric registered twice: ", name);
}

Family<Counter>& Registry::add_counter(const std::string& name, const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  check_name(name);
  order_.emplace_back(MetricType::kCounter, counters_.size());
  return *counters_.emplace_back(std::make_unique<Family<Counter>>(name, help, &mu_));
}

Family<Gauge>& Registry::add_gauge(const std::string& name, const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  check_name(name);
  order_.emplace_back(MetricType::kGauge, gauges_.size());
  return *gauges_.emplace_back(std::make_unique<Family<Gauge>>(name, help, &mu_));
}

Family<Histogram>& Registry::add_histogram(const std::string& name, const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  check_name(name);
  order_.emplace_back(MetricType::kHistogram, histograms_.size());
  return *histograms_.emplace_back(std::make_unique<Family<Histogram>>(name, help, &mu_));
}

std::string Registry::serialize() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [type, index] : order_) {
    if (type == MetricType::kCounter || type == MetricType::kGauge) {
      const bool counter = type == MetricType::kCounter;
      const auto write = [&](const auto& family) {
        if (family.metrics_.empty()) return;
        header(&out, family.name_, family.help_, counter ? "counter" : "gauge");
        for (const auto& [labels, m] : family.metrics_) {
          out += family.name_ + label_text(labels) + " " + format_value(m->value()) + "\n";
        }
      };
      if (counter) write(*counters_[index]);
      else write(*gauges_[index]);
      continue;
    }
    const auto& family = *histograms_[index];
    if (family.metrics_.empty()) continue;
    header(&out, family.name_, family.help_, "histogram");
    for (const auto& [labels, h] : family.metrics_) {
      const Histogram::Snapshot s = h->snapshot();
      for (size_t i = 0; i <= s.upper_bounds.size(); ++i) {
        const std::string le = i < s.upper_bounds.size() ? format_value(s.upper_bounds[i]) : "+Inf";
        out += family.name_ + "_bucket" + label_text(labels, "le", le) + " " + std::to_string(s.cumulative[i]) + "\n";
      }
      out += family.name_ + "_sum" + label_text(labels) + " " + format_value(s.sum) + "\n";
      out += family.name_ + "_count" + label_text(labels) + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

}  // namespace dtrn::coordinator
