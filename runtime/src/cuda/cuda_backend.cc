#include "cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "cuda/caching_allocator.h"
#include "cuda/cublaslt_gemm.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/elementwise.h"
#include "cuda/kernel_args.h"
#include "cuda/skinny_gemm.h"

namespace dtrn {
namespace {

using cuda::ElemType;

static_assert(static_cast<int>(ElemType::kF64) == static_cast<int>(DType::kF64) &&
              static_cast<int>(ElemType::kF32) == static_cast<int>(DType::kF32) &&
              static_cast<int>(ElemType::kBF16) == static_cast<int>(DType::kBF16) &&
              static_cast<int>(ElemType::kI32) == static_cast<int>(DType::kI32) &&
              static_cast<int>(ElemType::kI64) == static_cast<int>(DType::kI64));

ElemType elem_type(DType dtype) { return static_cast<ElemType>(dtype); }

cuda::ElemOp elem_op(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd: return cuda::ElemOp::kAdd;
    case BinaryOp::kSub: return cuda::ElemOp::kSub;
    case BinaryOp::kMul: return cuda::ElemOp::kMul;
  }
  DTRN_ASSERT(false, "unknown BinaryOp ", static_cast<int>(op));
  __builtin_unreachable();
}

// The CUDA device index of a tensor, asserting it lives on a GPU.
int device_of(const Tensor& t) {
  DTRN_ASSERT(t.device().is_cuda(), "CUDA kernel given ", t.describe());
  return t.device().index;
}

int same_device(const Tensor& a, const Tensor& b) {
  const int device = device_of(a);
  DTRN_ASSERT(device_of(b) == device, "CUDA kernel given ", a.describe(), " and ", b.describe());
  return device;
}

void check_floating_gpu(DType dtype, const char* kernel) {
  DTRN_CHECK(dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF64, kernel,
             ": the CUDA backend computes in f32, bf16 or f64, got ", dtype_name(dtype));
}

// The walk over `shape` with operand strides, collapsed (see strided_iter.h).
cuda::StridedIter<2> make_iter(const Shape& shape, const Shape& strides0, const Shape& strides1,
                               const char* kernel) {
  cuda::StridedIter<2> iter;
  Shape s(shape), s0(strides0), s1(strides1);
  // Size-1 dimensions carry no information; dropping them first lets tensors of more than kMaxDims
  // dimensions through as long as their collapsed form fits.
  int nd = 0;
  for (size_t d = 0; d < s.size(); ++d) {
    if (s[d] == 1) continue;
    s[nd] = s[d];
    s0[nd] = s0[d];
    s1[nd] = s1[d];
    ++nd;
  }
  DTRN_CHECK(nd <= cuda::kMaxDims, kernel, ": the CUDA backend walks at most ", cuda::kMaxDims,
             " non-trivial dimensions, got shape ", shape_str(shape));
  iter.ndim = nd;
  for (int d = 0; d < nd; ++d) {
    iter.shape[d] = s[d];
    iter.strides[0][d] = s0[d];
    iter.strides[1][d] = s1[d];
  }
  iter.collapse();
  return iter;
}

// The device of a pointer into device memory; asks the driver only when there is more than one GPU.
int device_of_pointer(const void* ptr) {
  if (cuda::device_count() <= 1) return 0;
  cudaPointerAttributes attributes{};
  CUDA_CHECK(cudaPointerGetAttributes(&attributes, ptr));
  return attributes.device;
}

// Note [Uploads without a synchronisation]
// A host-to-device copy from pageable memory must either wait for the copy or keep the source alive;
// the caller's buffer is neither ours to keep nor safe to read later. So small uploads (token batches,
// index lists) go through a ring of pinned staging buffers: the bytes are copied into the next slot, the
// device copy is queued from there, and an event marks when the slot may be reused. The caller may free
// its buffer at once, and the host never waits for the device unless it laps the ring.
class UploadRing {
 public:
  static constexpr int kSlots = 8;
  static constexpr size_t kSlotBytes = size_t{1} << 20;

  // Queues the upload and returns true, or returns false when nbytes does not fit a slot.
  bool upload(void* dst, const void* src, size_t nbytes, int device, cudaStream_t stream) {
    if (nbytes > kSlotBytes) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& slot = slots(device)[next_[device]];
    next_[device] = (next_[device] + 1) % kSlots;
    if (slot.host == nullptr) {
      CUDA_CHECK(cudaMallocHost(&slot.host, kSlotBytes));
      CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
    } else {
      CUDA_CHECK(cudaEventSynchronize(slot.done));
    }
    std::memcpy(slot.host, src, nbytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, slot.host, nbytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaEventRecord(slot.done, stream));
    return true;
  }

 private:
  struct Slot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  std::vector<Slot>& slots(int device) {
    if (static_cast<int>(slots_.size()) <= device) {
      slots_.resize(device + 1, std::vector<Slot>(kSlots));
      next_.resize(device + 1, 0);
    }
    return slots_[device];
  }

  std::mutex mutex_;
  std::vector<std::vector<Slot>> slots_;  // by device
  std::vector<int> next_;
};

UploadRing& upload_ring() {
  static UploadRing* ring = new UploadRing();  // leaked: see cuda_context.h
  return *ring;
}

void host_copy(void* dst, const void* src, size_t nbytes, cudaMemcpyKind kind, const void* device_ptr) {
  if (nbytes == 0) return;
  const int device = device_of_pointer(device_ptr);
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::stream_for(device);
  if (kind == cudaMemcpyHostToDevice && upload_ring().upload(dst, src, nbytes, device, stream)) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, stream));
  // The contract is blocking: the host may free or read its buffer as soon as this returns.
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

// Products with a dimension of at most 8 run on skinny_gemm.cu unless DTRN_SKINNY_GEMM=0 sends them to
// cuBLASLt too (A/B checks).
bool skinny_gemm_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DTRN_SKINNY_GEMM");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

}  // namespace

CudaBackend& cuda_backend() {
  static CudaBackend* backend = new CudaBackend();  // leaked: see cuda_context.h
  return *backend;
}

Backend* cuda_backend_or_null() { return &cuda_backend(); }

Allocator& CudaBackend::allocator() { return cuda::caching_allocator(); }

void CudaBackend::fill(const Tensor& out, double value) {
  DTRN_ASSERT(out.is_contiguous(), "fill needs a contiguous tensor");
  const int device = device_of(out);
  // The element's bits, converted on the host exactly as the CPU backend stores a double.
  uint64_t pattern = 0;
  switch (out.dtype()) {
    case DType::kF64: pattern = std::bit_cast<uint64_t>(value); break;
    case DType::kF32: pattern = std::bit_cast<uint32_t>(static_cast<float>(value)); break;
    case DType::kBF16: pattern = BFloat16(static_cast<float>(value)).bits; break;
    case DType::kI32: pattern = static_cast<uint32_t>(static_cast<int32_t>(value)); break;
    case DType::kI64: pattern = static_cast<uint64_t>(static_cast<int64_t>(value)); break;
  }
  cuda::DeviceGuard guard(device);
  cuda::launch_fill(out.raw_data(), out.numel(), static_cast<int>(dtype_size(out.dtype())), pattern,
                    cuda::stream_for(device));
}

void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  DTRN_ASSERT(src.shape() == dst.shape(), "copy shapes differ: ", src.describe(), " vs ",
              dst.describe());
  const int device = same_device(src, dst);
  if (dst.numel() == 0) return;
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::stream_for(device);
  const cuda::StridedIter<2> iter = make_iter(dst.shape(), src.strides(), dst.strides(), "copy");
  if (src.dtype() == dst.dtype() && iter.contiguous(0) && iter.contiguous(1)) {
    CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice,
                               stream));
    return;
  }
  cuda::launch_copy(src.raw_data(), elem_type(src.dtype()), dst.raw_data(), elem_type(dst.dtype()),
                    iter, stream);
}

void CudaBackend::copy_from_host(void* dst, const void* src, size_t nbytes) {
  host_copy(dst, src, nbytes, cudaMemcpyHostToDevice, dst);
}

void CudaBackend::copy_to_host(void* dst, const void* src, size_t nbytes) {
  host_copy(dst, src, nbytes, cudaMemcpyDeviceToHost, src);
}

void CudaBackend::fill_random(const Tensor& out, bool normal, double a, double b, uint64_t seed,
                              uint64_t stream, uint64_t offset) {
  DTRN_ASSERT(out.is_contiguous(), "fill_random needs a contiguous tensor");
  DTRN_CHECK(is_floating(out.dtype()), "random fill of a ", dtype_name(out.dtype()), " tensor");
  const int device = device_of(out);
  cuda::DeviceGuard guard(device);
  cuda::launch_fill_random(out.raw_data(), elem_type(out.dtype()), out.numel(), normal, a, b, seed,
                           stream, offset, cuda::stream_for(device));
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  DTRN_ASSERT(out.is_contiguous(), "binary needs a contiguous output");
  DTRN_ASSERT(a.shape() == out.shape() && b.shape() == out.shape(), "binary shapes: ", a.describe(),
              ", ", b.describe(), " -> ", out.describe());
  DTRN_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "binary op dtypes differ: ",
             a.describe(), ", ", b.describe(), " -> ", out.describe());
  check_floating_gpu(out.dtype(), "binary");
  const int device = same_device(a, out);
  same_device(b, out);
  if (out.numel() == 0) return;
  cuda::DeviceGuard guard(device);
  cuda::launch_binary(elem_op(op), elem_type(out.dtype()), a.raw_data(), b.raw_data(), out.raw_data(),
                      make_iter(out.shape(), a.strides(), b.strides(), "binary"),
                      cuda::stream_for(device));
}

void CudaBackend::gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c) {
  const bool bf16_into_f32 = a.dtype() == DType::kBF16 && c.dtype() == DType::kF32;
  DTRN_CHECK(a.dtype() == b.dtype() && (a.dtype() == c.dtype() || bf16_into_f32), "matmul dtypes differ: ",
             a.describe(), " x ", b.describe(), " -> ", c.describe());
  check_floating_gpu(c.dtype(), "matmul");
  DTRN_ASSERT(args.batch >= 1 && args.m >= 0 && args.n >= 0 && args.k >= 0, "gemm sizes");
  // The extents the arguments promise must lie inside each tensor (a broken op layer would otherwise
  // read or write out of bounds on the device, where nothing checks).
  const auto span = [](int64_t batch, int64_t stride, int64_t rows, int64_t cols) {
    return (batch - 1) * stride + rows * cols;
  };
  DTRN_ASSERT(span(args.batch, args.stride_a, args.m, args.k) <= a.numel() &&
                  span(args.batch, args.stride_b, args.k, args.n) <= b.numel() &&
                  span(args.batch, args.stride_c, args.m, args.n) <= c.numel(),
              "gemm extents exceed the operands: batch ", args.batch, ", m ", args.m, ", n ", args.n,
              ", k ", args.k, " for ", a.describe(), " x ", b.describe(), " -> ", c.describe());
  DTRN_ASSERT(a.is_contiguous() && b.is_contiguous() && c.is_contiguous(), "gemm needs contiguous operands");
  const int device = same_device(a, c);
  same_device(b, c);
  if (args.m == 0 || args.n == 0) return;
  const cuda::SkinnyGemmArgs skinny{args.m, args.n, args.k, args.trans_a, args.trans_b,
                                    static_cast<float>(args.alpha), static_cast<float>(args.beta)};
  if (args.batch == 1 && skinny_gemm_enabled() &&
      cuda::skinny_gemm_applies(skinny, elem_type(a.dtype()), elem_type(c.dtype()))) {
    cuda::OnDevice on(device);
    const size_t bytes = cuda::skinny_gemm_scratch_bytes(skinny, elem_type(a.dtype()));
    const Tensor scratch = bytes > 0 ? cuda::scratch_tensor(bytes, device) : Tensor();
    cuda::launch_skinny_gemm(skinny, elem_type(a.dtype()), elem_type(c.dtype()), a.raw_data(), b.raw_data(),
                             c.raw_data(), bytes > 0 ? scratch.raw_data() : nullptr, on.stream);
    return;
  }
  cuda::cublaslt_gemm(args, a.dtype(), c.dtype(), a.raw_data(), b.raw_data(), c.raw_data(), device);
}

// cuBLASLt reads C from the residual and writes D to c: the residual add inside the product's epilogue.
// Products the skinny kernels take, and batches, copy the residual first (Backend::gemm_add).
void CudaBackend::gemm_add(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& residual,
                           const Tensor& c) {
  DTRN_ASSERT(residual.shape() == c.shape() && residual.dtype() == c.dtype() && residual.is_contiguous(),
              "gemm_add: residual ", residual.describe(), " for ", c.describe());
  const cuda::SkinnyGemmArgs skinny{args.m, args.n, args.k, args.trans_a, args.trans_b,
                                    static_cast<float>(args.alpha), 1.0f};
  if (args.batch != 1 || args.m == 0 || args.n == 0 || a.dtype() != c.dtype() ||
      (skinny_gemm_enabled() && cuda::skinny_gemm_applies(skinny, elem_type(a.dtype()), elem_type(c.dtype())))) {
    Backend::gemm_add(args, a, b, residual, c);
    return;
  }
  same_device(residual, c);
  GemmArgs accumulate = args;
  accumulate.beta = 1.0;
  // gemm's checks (dtypes, extents, contiguity, devices) with c, then the product reading residual.
  DTRN_ASSERT(a.dtype() == b.dtype() && a.is_contiguous() && b.is_contiguous() && c.is_contiguous() &&
                  args.m * args.k <= a.numel() && args.k * args.n <= b.numel() && args.m * args.n <= c.numel(),
              "gemm_add: ", a.describe(), " x ", b.describe(), " -> ", c.describe());
  check_floating_gpu(c.dtype(), "matmul");
  const int device = same_device(a, c);
  same_device(b, c);
  cuda::cublaslt_gemm(accumulate, a.dtype(), c.dtype(), a.raw_data(), b.raw_data(), c.raw_data(), device,
                      residual.raw_data());
}

}  // namespace dtrn
