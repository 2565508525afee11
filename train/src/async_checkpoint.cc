#include "async_checkpoint.h"

#include <chrono>

#include "dtrn/runtime/check.h"

namespace dtrn::train {

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  if (!thread_.joinable()) return;
  // A commit across ranks would wait forever for rounds nobody serves any more, or for ranks that
  // stopped reporting to the coordinator.
  if (options_.barrier) options_.barrier->abandon();
  if (ranks_) ranks_->abandon();
  thread_.join();
}

void AsyncCheckpointWriter::start(std::shared_ptr<const CheckpointSnapshot> snapshot, int64_t step) {
  DTRN_CHECK(!thread_.joinable());
  done_ = Done{};
  finished_.store(false, std::memory_order_relaxed);
  done_.step = step;
  // The thread owns the snapshot and writes only done_, which poll() and wait() read after the join.
  thread_ = std::thread([this, snapshot = std::move(snapshot)] {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      done_.dir = write_checkpoint(run_dir_, *snapshot, options_);
    } catch (const Error& e) {
      done_.dir = Status::Internal(std::string("checkpoint writer: ") + e.what());
    }
    done_.write_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    finished_.store(true, std::memory_order_release);
  });
}

std::optional<AsyncCheckpointWriter::Done> AsyncCheckpointWriter::poll() {
  if (!thread_.joinable()) return std::nullopt;
  const bool finished = finished_.load(std::memory_order_acquire);
  if (!(ranks_ ? ranks_->round(finished) : finished)) return std::nullopt;
  thread_.join();
  return std::move(done_);
}

std::optional<AsyncCheckpointWriter::Done> AsyncCheckpointWriter::wait() {
  if (!thread_.joinable()) return std::nullopt;
  if (!ranks_) {
    thread_.join();
    return std::move(done_);
  }
  while (true) {
    if (auto done = poll()) return done;
    // Each poll is a collective round; between rounds the writers write.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace dtrn::train
