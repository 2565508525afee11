// Telemetry: the workers' per-step statistics, aggregated per job step over its ranks, judged for
// starvation and saturation (dtrnet-spec.md, with the worker's own StarvationMonitor), and exported as
// the Prometheus series of docs/coordinator.md.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dtrn/coordinator/coordinator.h"

namespace dtrn::coordinator {
namespace {

constexpr size_t kMaxLayers = 1024;
constexpr int64_t kMaxPendingSteps = 16;  // steps awaiting a slow rank before they are summarized without it

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool finite(double v) { return std::isfinite(v); }

// One line of the job log and of WatchJob's events for a routing verdict change.
std::string routing_line(const v1::RoutingEvent& e) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "layer %d %s at step %lld (routed fraction %.4f)", e.layer(), e.kind().c_str(),
                static_cast<long long>(e.step()), e.f());
  return buf;
}

}  // namespace

void Coordinator::register_metrics() {
  Registry& r = registry_;
  routed_fraction_ = &r.add_gauge("dtrn_layer_routed_fraction",
                                  "Fraction of tokens a DTRNet layer routed to attention, mean over data-parallel ranks");
  routed_fraction_min_ = &r.add_gauge("dtrn_layer_routed_fraction_min", "Routed fraction, smallest over ranks");
  routed_fraction_max_ = &r.add_gauge("dtrn_layer_routed_fraction_max", "Routed fraction, largest over ranks");
  p_attn_mean_ = &r.add_gauge("dtrn_layer_p_attn_mean", "Mean router probability of attention (s) of a layer");
  p_attn_quantile_ = &r.add_gauge("dtrn_layer_p_attn_quantile",
                                  "Quantile q of a layer's router probability of attention over a step's tokens");
  threshold_bias_ = &r.add_gauge("dtrn_layer_threshold_bias", "The threshold bias b_l a layer routes with");
  collapsed_ = &r.add_gauge("dtrn_layer_collapsed",
                            "1 when a layer's threshold alone routed none or all tokens of a micro-batch");
  starved_ = &r.add_gauge("dtrn_layer_starved", "1 while a layer is starved (f below threshold for the window, or fallback)");
  saturated_ = &r.add_gauge("dtrn_layer_saturated", "1 while a layer routes more than 90% of tokens for the window");
  fallback_total_ = &r.add_counter("dtrn_layer_fallback_total", "Steps in which a layer's starvation fallback fired");
  loss_ = &r.add_gauge("dtrn_train_loss", "Training loss of the newest summarized step");
  tokens_per_second_ = &r.add_gauge("dtrn_train_tokens_per_second", "Training throughput, sum over ranks");
  job_step_ = &r.add_gauge("dtrn_job_step", "Newest step of a job");
  job_state_ = &r.add_gauge("dtrn_job_state", "1 for the state a job is in, 0 for the others");
  job_restarts_ = &r.add_counter("dtrn_job_restarts_total", "Generations restarted after a failure");
  workers_ = &r.add_gauge("dtrn_workers", "Workers by state");
  last_heartbeat_ = &r.add_gauge("dtrn_worker_last_heartbeat_seconds", "Unix time of a rank's newest heartbeat");
  step_seconds_ = &r.add_histogram("dtrn_step_duration_seconds", "Step time per rank (stragglers)");
  rejected_ = &r.add_counter("dtrn_rpc_rejected_total", "RPCs refused, by reason");
  stats_received_ = &r.add_counter("dtrn_stats_messages_total", "Per-step statistics messages accepted");
  checkpoint_reports_ = &r.add_counter("dtrn_checkpoint_reports_total",
                                       "Checkpoint commit reports recorded (ReportShard), by job and phase");
  checkpoint_saves_ = &r.add_counter("dtrn_checkpoint_saves_total",
                                     "Checkpoint saves through the coordinator, by job and outcome");
  checkpoint_blocked_ = &r.add_gauge("dtrn_checkpoint_blocked_seconds",
                                     "How long the newest committed checkpoint held training up, by job and rank");
  checkpoint_write_ = &r.add_gauge("dtrn_checkpoint_write_seconds",
                                   "How long the newest committed checkpoint took to write in the background, by job and rank");
  for (const char* reason : {"unauthenticated", "permission_denied", "invalid_argument"}) rejected(reason);
}

void Coordinator::update_job_metrics(const JobRecord& job) {
  const std::string& id = job.data.job.id();
  for (int s = v1::JOB_STATE_PENDING; s <= v1::JOB_STATE_CANCELLED; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    job_state_->add({{"job", id}, {"state", state_name(state)}}).set(job.data.job.state() == state ? 1 : 0);
  }
  job_step_->add({{"job", id}}).set(static_cast<double>(job.step));
  job_restarts_->add({{"job", id}});
}

Status Coordinator::step_stats(const v1::StepStats& stats) {
  // Malformed statistics are refused before they touch any job.
  const auto invalid = [&](const std::string& why) {
    rejected_->add({{"reason", "invalid_argument"}}).inc();
    return Status::InvalidArgument("step statistics: " + why);
  };
  if (stats.step() <= 0) return invalid("step " + std::to_string(stats.step()) + " is not positive");
  if (static_cast<size_t>(stats.layers_size()) > kMaxLayers) return invalid("more than 1024 layers");
  if (!finite(stats.tokens_per_s()) || !finite(stats.step_ms()) || stats.step_ms() < 0) {
    return invalid("tokens_per_s and step_ms must be finite and non-negative");
  }
  for (const auto& l : stats.layers()) {
    if (!(l.f() >= 0 && l.f() <= 1) || !finite(l.s()) || l.layer() < 0) {
      return invalid("layer " + std::to_string(l.layer()) + ": f must lie in [0, 1] and s be finite");
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  JobRecord* job = nullptr;
  auto slot = authorize_worker(stats.worker(), &job);
  if (!slot.ok()) return slot.status();
  WorkerSlot& w = **slot;
  if (stats.step() <= w.stats_step) {
    return invalid("step " + std::to_string(stats.step()) + " arrived after step " + std::to_string(w.stats_step));
  }
  w.stats_step = stats.step();
  w.step = std::max(w.step, stats.step());
  stats_received_->add({}).inc();
  step_seconds_->add({{"job", job->data.job.id()}, {"rank", std::to_string(w.rank)}},
                     {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})
      .observe(stats.step_ms() / 1e3);
  const int world = job->data.job.world_size();
  if (stats.ranks() < 0 || stats.ranks() > world) {
    return invalid("ranks " + std::to_string(stats.ranks()) + " is outside 0.." + std::to_string(world));
  }
  PendingStep& pending = job->pending_steps[stats.step()];
  pending.ranks.push_back(stats);
  pending.covered += std::max(1, stats.ranks());
  // Summarize every step all ranks reported, and any step left behind by a rank that is too far behind.
  while (!job->pending_steps.empty()) {
    auto first = job->pending_steps.begin();
    const bool complete = first->second.covered >= world;
    const bool stale = job->pending_steps.rbegin()->first - first->first >= kMaxPendingSteps;
    if (!complete && !stale) break;
    aggregate(*job, first->first);
    job->pending_steps.erase(first);
  }
  return Status::Ok();
}

void Coordinator::aggregate(JobRecord& job, int64_t step) {
  const auto& ranks = job.pending_steps.at(step).ranks;
  const std::string& id = job.data.job.id();
  v1::StepSummary summary;
  summary.set_step(step);
  double loss = 0;
  for (const auto& r : ranks) {
    loss += r.loss();
    summary.set_tokens_per_s(summary.tokens_per_s() + r.tokens_per_s());
    summary.set_step_ms(std::max(summary.step_ms(), r.step_ms()));
  }
  summary.set_loss(loss / static_cast<double>(ranks.size()));
  // Layers as the first rank lists them; every rank runs the same model.
  for (const auto& first_layer : ranks.front().layers()) {
    v1::LayerSummary* l = summary.add_layers();
    l->set_layer(first_layer.layer());
    double f = 0, s = 0, f_min = 1, f_max = 0, bias = 0;
    std::vector<double> quantiles(first_layer.p_attn_quantiles_size(), 0.0);
    int n = 0;
    int64_t fallback_count = 0;
    bool fallback = false, collapsed = false;
    for (const auto& r : ranks) {
      for (const auto& rl : r.layers()) {
        if (rl.layer() != first_layer.layer()) continue;
        f += rl.f();
        s += rl.s();
        bias += rl.threshold_bias();
        for (int i = 0; i < rl.p_attn_quantiles_size() && i < static_cast<int>(quantiles.size()); ++i) {
          quantiles[i] += rl.p_attn_quantiles(i);
        }
        // A message that combines several ranks brings their extremes.
        f_min = std::min(f_min, r.ranks() > 1 ? rl.f_min() : rl.f());
        f_max = std::max(f_max, r.ranks() > 1 ? rl.f_max() : rl.f());
        fallback = fallback || rl.fallback();
        fallback_count += rl.fallback_count();
        collapsed = collapsed || rl.collapsed();
        ++n;
      }
    }
    for (double q : quantiles) l->add_p_attn_quantiles(q / n);
    l->set_threshold_bias(bias / n);
    l->set_fallback_count(fallback_count);
    l->set_collapsed(collapsed);
    l->set_f(f / n);
    l->set_s(s / n);
    l->set_f_min(f_min);
    l->set_f_max(f_max);
    l->set_fallback(fallback);
    const auto verdict = job.monitor->observe(l->layer(), l->f(), fallback);
    l->set_starved(verdict.starved);
    l->set_saturated(verdict.saturated);

    const Labels labels = {{"job", id}, {"layer", std::to_string(l->layer())}};
    routed_fraction_->add(labels).set(l->f());
    routed_fraction_min_->add(labels).set(f_min);
    routed_fraction_max_->add(labels).set(f_max);
    p_attn_mean_->add(labels).set(l->s());
    static constexpr const char* kQuantileLabels[] = {"0.1", "0.5", "0.9"};
    for (int i = 0; i < l->p_attn_quantiles_size() && i < 3; ++i) {
      Labels ql = labels;
      ql["q"] = kQuantileLabels[i];
      p_attn_quantile_->add(ql).set(l->p_attn_quantiles(i));
    }
    threshold_bias_->add(labels).set(l->threshold_bias());
    collapsed_->add(labels).set(collapsed ? 1 : 0);
    starved_->add(labels).set(verdict.starved ? 1 : 0);
    saturated_->add(labels).set(verdict.saturated ? 1 : 0);
    auto& fallbacks = fallback_total_->add(labels);
    if (fallback) fallbacks.inc();

    // Events on changes of verdict only, so a layer starved for a thousand steps is one line, not a thousand.
    auto& last = job.routing_verdicts[l->layer()];
    const std::pair<bool, bool> now = {verdict.starved, verdict.saturated};
    if (now != last) {
      v1::RoutingEvent e;
      e.set_layer(l->layer());
      e.set_kind(verdict.starved ? "starved" : (verdict.saturated ? "saturated" : "recovered"));
      e.set_step(step);
      e.set_f(l->f());
      last = now;
      v1::JobEvent event;
      event.set_time_unix_s(unix_now());
      *event.mutable_routing() = e;
      publish(job, event);
      log_event(job, routing_line(e));
    }
  }
  job.step = std::max(job.step, step);
  loss_->add({{"job", id}}).set(summary.loss());
  tokens_per_second_->add({{"job", id}}).set(summary.tokens_per_s());
  job_step_->add({{"job", id}}).set(static_cast<double>(job.step));
  v1::JobEvent event;
  event.set_time_unix_s(unix_now());
  *event.mutable_step() = summary;
  publish(job, event);
}

}  // namespace dtrn::coordinator
