// Prometheus exposition with prometheus-cpp's data model (that library is in no registry here): a
// Registry owns metric Families; a Family holds one Counter, Gauge or Histogram per label set; the
// Registry serializes everything in the text format 0.0.4 that Prometheus scrapes.
//
// Thread-safety: every method may be called from any thread. Adding and removing metrics takes the
// registry's lock; a metric's value is updated lock-free (counters, gauges) or under its own lock
// (histograms). References returned by add() stay valid until that label set is removed.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dtrn::coordinator {

using Labels = std::map<std::string, std::string>;

class Counter {
 public:
  void inc(double v = 1);  // v >= 0: a counter never goes down
  double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v); }
  double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implied
  void observe(double v);
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), the last one is +Inf
  double sum_ = 0;
};

enum class MetricType { kCounter, kGauge, kHistogram };

// One metric name with its help text and one metric per label set.
template <typename T>
class Family {
 public:
  Family(std::string name, std::string help, std::mutex* mu) : name_(std::move(name)), help_(std::move(help)), mu_(mu) {}
  // The metric of `labels`, created on first use (histograms with `bounds`).
  T& add(const Labels& labels, std::vector<double> bounds = {});
  void remove(const Labels& labels);

 private:
  friend class Registry;
  std::string name_, help_;
  std::mutex* mu_;  // the registry's
  std::map<Labels, std::unique_ptr<T>> metrics_;
};

class Registry {
 public:
  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]* and be unique in the registry (CHECKed: a programming error).
  Family<Counter>& add_counter(const std::string& name, const std::string& help);
  Family<Gauge>& add_gauge(const std::string& name, const std::string& help);
  Family<Histogram>& add_histogram(const std::string& name, const std::string& help);
  // Text format 0.0.4 (Content-Type: text/plain; version=0.0.4). Families without metrics are omitted.
  std::string serialize() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family<Counter>>> counters_;
  std::vector<std::unique_ptr<Family<Gauge>>> gauges_;
  std::vector<std::unique_ptr<Family<Histogram>>> histograms_;
  std::vector<std::pair<MetricType, size_t>> order_;  // families in registration order
  void check_name(const std::string& name) const;
};

template <typename T>
T& Family<T>::add(const Labels& labels, std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(*mu_);
  auto& slot = metrics_[labels];
  if (!slot) {
    if constexpr (std::is_same_v<T, Histogram>) slot = std::make_unique<T>(std::move(bounds));
    else slot = std::make_unique<T>();
  }
  return *slot;
}

template <typename T>
void Family<T>::remove(const Labels& labels) {
  std::lock_guard<std::mutex> lock(*mu_);
  metrics_.erase(labels);
}

}  // namespace dtrn::coordinator
