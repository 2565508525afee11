#include "rank_barrier.h"

#include "dtrn/runtime/check.h"

namespace dtrn::train {
namespace {

// A vote as the bytes a broadcast or gather carries: '1' or '0', then the text.
std::string encode(const Vote& v) { return (v.ok ? "1" : "0") + v.text; }
Vote decode(const std::string& bytes) {
  DTRN_CHECK(!bytes.empty(), "RankBarrier: an empty vote");
  return {bytes[0] == '1', bytes.substr(1)};
}

}  // namespace

std::vector<std::string> RankBarrier::post(Call call, const std::string& value) {
  std::unique_lock<std::mutex> lock(mu_);
  DTRN_CHECK(call_ == kNone, "RankBarrier: a second call while one waits");
  if (abandoned_) throw Error("the training thread stopped serving the commit before it was done");
  call_ = call;
  value_ = value;
  done_ = false;
  cv_.wait(lock, [this] { return done_ || abandoned_; });
  call_ = kNone;
  if (!done_) throw Error("the training thread stopped serving the commit before it was done");
  return std::move(result_);
}

Vote RankBarrier::broadcast(const Vote& value) { return decode(post(kBroadcast, encode(value)).at(0)); }

std::vector<Vote> RankBarrier::report(int64_t, const Vote& mine) {
  const std::vector<std::string> all = post(kGather, encode(mine));
  std::vector<Vote> votes;
  if (rank() == 0) {
    for (const std::string& v : all) votes.push_back(decode(v));
  }
  return votes;
}

void RankBarrier::abandon() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned_ = true;
  }
  cv_.notify_one();
}

bool RankBarrier::round(bool finished) {
  Call call;
  std::string value;
  {
    std::lock_guard<std::mutex> lock(mu_);
    call = done_ ? kNone : call_;  // a call carried out but not yet taken by the writer is not waiting
    value = value_;
  }
  // min(call), -max(call), min(finished): every rank waits in the same call when min == max > 0.
  Tensor state = Tensor::from_ints({int64_t{call}, -int64_t{call}, finished ? 1 : 0}, {3}, DType::kI64);
  comm_.all_reduce(state, parallel::ReduceOp::kMin);
  const std::vector<int64_t> v = state.to_ints();
  if (v[2] == 1) return true;
  if (v[0] == 0) return false;
  DTRN_CHECK(v[0] == -v[1], "RankBarrier: the ranks' writers wait in different calls");
  std::vector<std::string> result;
  if (call == kBroadcast) {
    parallel::broadcast_string(comm_, &value, 0);
    result = {value};
  } else {
    result = parallel::all_gather_strings(comm_, value);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(result);
    done_ = true;
  }
  cv_.notify_one();
  return false;
}

}  // namespace dtrn::train
