#include "dtrn/parallel/grad_buckets.h"

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/check.h"

namespace dtrn::parallel {

GradientBuckets::GradientBuckets(const std::vector<std::pair<std::string, Tensor>>& leaves, Communicator& group,
                                 BucketOptions options)
    : group_(group), options_(options) {
  DTRN_CHECK(!leaves.empty(), "GradientBuckets: no parameters");
  const Device device = leaves[0].second.device();
  const DType leaf_dtype = leaves[0].second.dtype();
  const DType grad_dtype = leaf_dtype == DType::kBF16 ? DType::kF32 : leaf_dtype;
  const int64_t element_bytes = dtype_size(grad_dtype);
  const int64_t kAlignElements = 256 / element_bytes;
  const int64_t size = group_.size();

  // Reverse parameter order: the order backward finishes them in.
  std::vector<int64_t> bucket_numel;
  for (auto it = leaves.rbegin(); it != leaves.rend(); ++it) {
    const Tensor& t = it->second;
    DTRN_CHECK(t.device() == device && t.dtype() == leaf_dtype, "GradientBuckets: '", it->first, "' is ",
               t.describe(), ", '", leaves[0].first, "' ", leaves[0].second.describe());
    if (bucket_numel.empty() || bucket_numel.back() * element_bytes >= options_.bucket_bytes) {
      bucket_numel.push_back(0);
    }
    // Each gradient starts on a 256-byte boundary: the alignment cuBLASLt assumes for the weight-gradient
    // products that accumulate straight into it (matmul.cc), and that vectorised kernels like.
    int64_t& end = bucket_numel.back();
    end = (end + kAlignElements - 1) / kAlignElements * kAlignElements;
    slots_.push_back({it->first, t, static_cast<int64_t>(bucket_numel.size()) - 1, end});
    end += t.numel();
  }
  NoGradGuard no_grad;
  buckets_.resize(bucket_numel.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const int64_t padded = (bucket_numel[b] + size - 1) / size * size;
    buckets_[b].buffer = Tensor::zeros({padded}, grad_dtype, device);
    if (options_.shard) buckets_[b].shard = Tensor::zeros({padded / size}, grad_dtype, device);
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    Bucket& b = buckets_[s.bucket];
    b.slots.push_back(static_cast<int64_t>(i));
    s.leaf.set_grad(b.buffer.narrow(0, s.offset, s.leaf.numel()).reshape(s.leaf.shape()));
    register_post_accumulate_grad_hook(s.leaf, [this, i] { ready(static_cast<int64_t>(i)); });
  }
}

GradientBuckets::~GradientBuckets() {
  for (Bucket& b : buckets_) {
    if (b.work) b.work->wait();
  }
  for (Slot& s : slots_) register_post_accumulate_grad_hook(s.leaf, nullptr);
}

void GradientBuckets::arm() {
  armed_ = true;
  next_to_start_ = 0;
  for (Bucket& b : buckets_) b.remaining = static_cast<int64_t>(b.slots.size());
}

void GradientBuckets::ready(int64_t slot) {
  if (!armed_) return;
  Bucket& b = buckets_[slots_[slot].bucket];
  if (--b.remaining == 0) start_ready_buckets();
}

void GradientBuckets::start_ready_buckets() {
  while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].remaining <= 0) {
    Bucket& b = buckets_[next_to_start_++];
    b.work = options_.shard ? group_.reduce_scatter_async(b.buffer, b.shard, ReduceOp::kAvg)
                            : group_.all_reduce_async(b.buffer, ReduceOp::kAvg);
  }
}

void GradientBuckets::finish() {
  DTRN_CHECK(armed_, "GradientBuckets::finish without arm()");
  for (Bucket& b : buckets_) b.remaining = 0;
  start_ready_buckets();
  for (Bucket& b : buckets_) {
    b.work->wait();
    b.work.reset();
  }
  armed_ = false;
}

}  // namespace dtrn::parallel
