#include "cuda/cublaslt_gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"

namespace dtrn::cuda {
namespace {

struct PlanKey {
  int device;
  DType dtype;    // of A and B
  DType c_dtype;  // of C: dtype, or f32 for bf16 inputs (accumulation into f32 gradients)
  int64_t batch, m, n, k;
  bool trans_a, trans_b;
  int64_t stride_a, stride_b, stride_c;
  uint32_t align_a, align_b, align_c;
  auto operator<=>(const PlanKey&) const = default;
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_c = nullptr;  // cuBLASLt's A, B
  cublasLtMatmulAlgo_t algo{};
  bool borrowed = false;  // algo was timed for another product of the bucket (not yet seen to run)
};

// Note [Plans for products whose M changes every call]
// A D block's packed products have M = the routed count, which changes every micro-batch (and K = the
// routed count in their weight gradients). Asking the heuristic, let alone timing candidates, for each
// new size would stall every step and grow the cache without end. So an algorithm is chosen once per
// bucket (M, N and K each rounded up to a power of two) and borrowed by every other product of the
// bucket: a new product costs only its layout descriptors. cuBLASLt refuses (without running) an
// algorithm that cannot compute a given shape; such a product then gets the heuristic's choice for its
// exact shape, untimed. Exact plans are bounded: past kMaxPlans they are all released (the chosen
// algorithms, a few bytes each, are kept).
constexpr size_t kMaxPlans = 1024;

struct PlanCache {
  std::mutex mutex;
  std::map<PlanKey, Plan> plans;
  std::map<PlanKey, cublasLtMatmulAlgo_t> timed;  // by bucket key
};

int64_t size_bucket(int64_t size) {
  int64_t b = 16;
  while (b < size) b *= 2;
  return b;
}

PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache();  // leaked: see cuda_context.h
  return *cache;
}

// cuBLASLt picks vectorised kernels by the alignment it is promised (256 bytes unless told); views at
// odd offsets and odd batch strides must say so, or a kernel may read misaligned.
uint32_t alignment(const void* ptr, int64_t stride_elems, int64_t batch, size_t elem_bytes) {
  uint64_t bits = reinterpret_cast<uint64_t>(ptr);
  if (batch > 1) bits |= static_cast<uint64_t>(stride_elems) * elem_bytes;
  bits |= 256;
  return static_cast<uint32_t>(bits & (~bits + 1));  // lowest set bit
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, rows));  // column-major, ld = rows
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                  sizeof(count)));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &stride, sizeof(stride)));
  }
  return layout;
}

void destroy(Plan& plan) {
  cublasLtMatrixLayoutDestroy(plan.layout_c);
  cublasLtMatrixLayoutDestroy(plan.layout_b);
  cublasLtMatrixLayoutDestroy(plan.layout_a);
  cublasLtMatmulDescDestroy(plan.op);
  plan = Plan{};
}

// Note [Choosing among cuBLASLt's candidates]
// The heuristic's first algorithm is a guess from the shape alone; for some shapes (the LM head's long-K
// products, bench/RESULTS.md) a later candidate is markedly faster. So the first time a plan is made,
// up to kCandidates algorithms are each run kTimedRuns times on the real operands into a scratch output,
// timed with events, and the fastest is kept. This costs a few milliseconds once per distinct product;
// DTRN_GEMM_AUTOTUNE=0 keeps the heuristic's first choice.
constexpr int kCandidates = 8;
constexpr int kTimedRuns = 3;

bool autotune_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DTRN_GEMM_AUTOTUNE");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

// The index of the fastest of `algos` for this plan, timed on the real inputs a, b into a scratch C.
int fastest_candidate(const Plan& plan, const PlanKey& key, DeviceContext& ctx,
                      const std::vector<cublasLtMatmulHeuristicResult_t>& algos, const void* a,
                      const void* b) {
  const int64_t c_elems = std::max(key.m * key.n, (key.batch - 1) * key.stride_c + key.m * key.n);
  const size_t c_bytes = static_cast<size_t>(c_elems) * dtype_size(key.c_dtype);
  void* scratch = nullptr;
  CUDA_CHECK(cudaMallocAsync(&scratch, c_bytes, ctx.stream));
  const float one32 = 1.0f, zero32 = 0.0f;
  const double one64 = 1.0, zero64 = 0.0;
  const bool f64 = key.dtype == DType::kF64;
  const void* alpha = f64 ? static_cast<const void*>(&one64) : &one32;
  const void* beta = f64 ? static_cast<const void*>(&zero64) : &zero32;
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  int best = 0;
  float best_ms = -1;
  for (size_t i = 0; i < algos.size(); ++i) {
    auto run = [&] {
      return cublasLtMatmul(ctx.cublaslt, plan.op, alpha, b, plan.layout_a, a, plan.layout_b, beta,
                            scratch, plan.layout_c, scratch, plan.layout_c, &algos[i].algo, ctx.workspace,
                            ctx.workspace_bytes, ctx.stream);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that cannot run here is skipped
    CUDA_CHECK(cudaEventRecord(start, ctx.stream));
    for (int r = 0; r < kTimedRuns; ++r) run();
    CUDA_CHECK(cudaEventRecord(stop, ctx.stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (best_ms < 0 || ms < best_ms) {
      best_ms = ms;
      best = static_cast<int>(i);
    }
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  CUDA_CHECK(cudaFreeAsync(scratch, ctx.stream));
  return best;
}

// The descriptors of a product (no algorithm yet).
Plan make_descriptors(const PlanKey& key) {
  cudaDataType_t data_type = CUDA_R_32F, scale_type = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  switch (key.dtype) {
    case DType::kF32: break;
    case DType::kBF16: data_type = CUDA_R_16BF; break;
    case DType::kF64:
      data_type = scale_type = CUDA_R_64F;
      compute = CUBLAS_COMPUTE_64F;
      break;
    default: DTRN_ASSERT(false, "cublaslt_gemm of ", dtype_name(key.dtype));
  }

  Plan plan;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.op, compute, scale_type));
  // See Note [Row-major through a column-major library]: cuBLASLt's A is dtrn's B and vice versa.
  const cublasOperation_t op_first = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                              sizeof(op_first)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                              sizeof(op_second)));
  // Stored shapes, column-major: dtrn's row-major B is [K, N] (or [N, K] transposed), seen as N x K
  // (or K x N); dtrn's A is [M, K] (or [K, M]), seen as K x M (or M x K); C is [M, N], seen as N x M.
  plan.layout_a = key.trans_b ? make_layout(data_type, key.k, key.n, key.batch, key.stride_b)
                              : make_layout(data_type, key.n, key.k, key.batch, key.stride_b);
  plan.layout_b = key.trans_a ? make_layout(data_type, key.m, key.k, key.batch, key.stride_a)
                              : make_layout(data_type, key.k, key.m, key.batch, key.stride_a);
  const cudaDataType_t c_type = key.c_dtype == key.dtype ? data_type : CUDA_R_32F;
  plan.layout_c = make_layout(c_type, key.n, key.m, key.batch, key.stride_c);
  return plan;
}

// The heuristic's algorithm for the exact product, or the fastest of its candidates on the real
// operands when time_candidates (Note [Choosing among cuBLASLt's candidates]).
cublasLtMatmulAlgo_t choose_algo(const Plan& plan, const PlanKey& key, DeviceContext& ctx, const void* a,
                                 const void* b, bool time_candidates) {
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = ctx.workspace_bytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace, sizeof(workspace)));
  // Again swapped: cuBLASLt's A is dtrn's B.
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                    &key.align_b, sizeof(key.align_b)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                    &key.align_a, sizeof(key.align_a)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                    &key.align_c, sizeof(key.align_c)));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                    &key.align_c, sizeof(key.align_c)));
  std::vector<cublasLtMatmulHeuristicResult_t> results(time_candidates ? kCandidates : 1);
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      ctx.cublaslt, plan.op, plan.layout_a, plan.layout_b, plan.layout_c, plan.layout_c, pref,
      static_cast<int>(results.size()), results.data(), &found);
  cublasLtMatmulPreferenceDestroy(pref);
  CUBLAS_CHECK(status);
  DTRN_CHECK(found > 0, "cuBLASLt has no algorithm for a ", dtype_name(key.dtype), " gemm of batch ",
             key.batch, ", m ", key.m, ", n ", key.n, ", k ", key.k, ", trans_a ", key.trans_a,
             ", trans_b ", key.trans_b, ", strides ", key.stride_a, "/", key.stride_b, "/",
             key.stride_c);
  results.resize(found);
  return results[found > 1 ? fastest_candidate(plan, key, ctx, results, a, b) : 0].algo;
}

}  // namespace

void cublaslt_gemm(const GemmArgs& args, DType dtype, DType c_dtype, const void* a, const void* b, void* c,
                   int device, const void* c_in) {
  if (c_in == nullptr) c_in = c;
  DTRN_ASSERT(c_dtype == dtype || (dtype == DType::kBF16 && c_dtype == DType::kF32), "cublaslt_gemm: ",
              dtype_name(dtype), " inputs into ", dtype_name(c_dtype));
  const size_t elem = dtype_size(dtype);
  const PlanKey key{device,
                    dtype,
                    c_dtype,
                    args.batch,
                    args.m,
                    args.n,
                    args.k,
                    args.trans_a,
                    args.trans_b,
                    // Strides matter only between batch entries: a single product's key must not
                    // change with them (they follow M, which changes every micro-batch in D blocks).
                    args.batch > 1 ? args.stride_a : 0,
                    args.batch > 1 ? args.stride_b : 0,
                    args.batch > 1 ? args.stride_c : 0,
                    alignment(a, args.stride_a, args.batch, elem),
                    alignment(b, args.stride_b, args.batch, elem),
                    std::min(alignment(c, args.stride_c, args.batch, dtype_size(c_dtype)),
                             alignment(c_in, args.stride_c, args.batch, dtype_size(c_dtype)))};
  DeviceGuard guard(device);
  DeviceContext& ctx = device_context(device);
  Plan plan;
  {
    PlanCache& cache = plan_cache();
    std::lock_guard<std::mutex> lock(cache.mutex);
    auto it = cache.plans.find(key);
    if (it == cache.plans.end()) {
      if (cache.plans.size() >= kMaxPlans) {
        for (auto& [k, p] : cache.plans) destroy(p);
        cache.plans.clear();
      }
      PlanKey bucket = key;
      bucket.m = size_bucket(key.m);
      bucket.n = size_bucket(key.n);
      bucket.k = size_bucket(key.k);
      auto timed = cache.timed.find(bucket);
      Plan made = make_descriptors(key);
      if (timed != cache.timed.end()) {
        made.algo = timed->second;
        made.borrowed = true;
      } else {
        made.algo = choose_algo(made, key, ctx, a, b, autotune_enabled());
        cache.timed.emplace(bucket, made.algo);
      }
      it = cache.plans.emplace(key, made).first;
    }
    plan = it->second;
  }

  const float alpha32 = static_cast<float>(args.alpha), beta32 = static_cast<float>(args.beta);
  const double alpha64 = args.alpha, beta64 = args.beta;
  const void* alpha = dtype == DType::kF64 ? static_cast<const void*>(&alpha64) : &alpha32;
  const void* beta = dtype == DType::kF64 ? static_cast<const void*>(&beta64) : &beta32;
  auto run = [&] {
    return cublasLtMatmul(ctx.cublaslt, plan.op, alpha, b, plan.layout_a, a, plan.layout_b, beta, c_in,
                          plan.layout_c, c, plan.layout_c, &plan.algo, ctx.workspace, ctx.workspace_bytes,
                          ctx.stream);
  };
  cublasStatus_t status = run();
  if (plan.borrowed) {
    // A borrowed algorithm that cannot run this exact product is replaced by the heuristic's choice
    // for it, once; either way the plan is settled.
    if (status != CUBLAS_STATUS_SUCCESS) {
      plan.algo = choose_algo(plan, key, ctx, a, b, /*time_candidates=*/false);
      status = run();
    }
    plan.borrowed = false;
    PlanCache& cache = plan_cache();
    std::lock_guard<std::mutex> lock(cache.mutex);
    if (auto it = cache.plans.find(key); it != cache.plans.end()) it->second = plan;
  }
  CUBLAS_CHECK(status);
}

}  // namespace dtrn::cuda
