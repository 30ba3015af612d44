// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Internal interface of the CUDA backend: device plans, buffers and kernel launchers. No CUDA types
/// (streams and handles are opaque), so plain C++ files, the tests and the benchmark can use it.
/// Every function throws tq::cuda::CudaError on a CUDA failure; nothing here falls back to the CPU
/// (that is CudaBackend's job).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "quant/quantizer.h"

namespace tq {
namespace cuda {

/// A CUDA failure. `code` is the cudaError_t (or cublasStatus_t + 10000) value; `sticky` errors leave
/// the context unusable (kernel faults), others (out of memory, bad launch configuration) do not.
class CudaError : public std::runtime_error {
 public:
  CudaError(const std::string& what, int code, bool sticky, bool outOfMemory)
      : std::runtime_error(what), m_code(code), m_sticky(sticky), m_oom(outOfMemory) {}
  int code() const { return m_code; }
  bool sticky() const { return m_sticky; }
  bool outOfMemory() const { return m_oom; }

 private:
  int m_code;
  bool m_sticky, m_oom;
};

/// Throws CudaError when code is not cudaSuccess (what: "<what>: <error name>: <error string>").
void check(int code, const char* what);
/// Checks cudaGetLastError() after a launch.
void checkLaunch(const char* what);

/// Owning device allocation (cudaMalloc); grows with ensure(); never shrinks.
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(size_t bytes) { ensure(bytes); }
  ~DevBuf();
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : m_ptr(o.m_ptr), m_bytes(o.m_bytes), m_view(o.m_view) {
    o.m_ptr = nullptr;
    o.m_bytes = 0;
    o.m_view = false;
  }
  DevBuf& operator=(DevBuf&& o) noexcept;
  /// Makes the buffer at least `bytes` large (contents are lost when it grows; a view that is too small
  /// becomes an allocation of its own).
  void ensure(size_t bytes);
  void release();
  /// A view of `bytes` at p inside another allocation (not freed by this object; the owner outlives it).
  void setView(void* p, size_t bytes);
  void* get() const { return m_ptr; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(m_ptr);
  }
  size_t bytes() const { return m_bytes; }

 private:
  void* m_ptr = nullptr;
  size_t m_bytes = 0;
  bool m_view = false;
};

/// Page-locked host memory (cudaMallocHost) for fast transfers.
class PinnedBuf {
 public:
  PinnedBuf() = default;
  ~PinnedBuf();
  PinnedBuf(const PinnedBuf&) = delete;
  PinnedBuf& operator=(const PinnedBuf&) = delete;
  void ensure(size_t bytes);
  void* get() const { return m_ptr; }
  size_t bytes() const { return m_bytes; }

 private:
  void* m_ptr = nullptr;
  size_t m_bytes = 0;
};

/// One device, one stream, one cuBLAS handle.
class Context {
 public:
  /// background: the stream has the device's lowest priority (the sweep's lanes), else its highest (the
  /// views' calls: their kernels are scheduled before a running sweep's queued blocks).
  /// TQ_CUDA_STREAM_PRIORITY=0: every stream at the default priority (for comparisons).
  explicit Context(int device = 0, bool background = false);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  void* stream() const { return m_stream; }  ///< cudaStream_t
  void* cublas() const { return m_cublas; }  ///< cublasHandle_t
  int multiprocessors() const { return m_sms; }
  size_t sharedPerBlockOptin() const { return m_smemOptin; }
  int device() const { return m_device; }
  int computeMajor() const { return m_ccMajor; }
  void sync();
  void upload(void* dst, const void* src, size_t bytes);
  void download(void* dst, const void* src, size_t bytes);
  void copyAsyncH2D(void* dst, const void* src, size_t bytes);
  void copyAsyncD2H(void* dst, const void* src, size_t bytes);
  void copyAsyncD2D(void* dst, const void* src, size_t bytes);
  void memsetAsync(void* dst, int value, size_t bytes);
  /// Free device memory in bytes (cudaMemGetInfo).
  size_t freeMemory() const;

 private:
  int m_device = 0;
  void* m_stream = nullptr;
  void* m_cublas = nullptr;
  int m_sms = 0;
  size_t m_smemOptin = 0;
  int m_ccMajor = 0;
};

/// Everything the kernels need about one Quantizer, uploaded once (one allocation, one copy: the
/// device buffers below are views into `arena`).
struct DevPlan {
  DevBuf arena;
  int dim = 0, mseBits = 0, projDim = 0;
  bool hadamard = false;         ///< randomized Hadamard (else dense matrix)
  bool fastCompress = false;     ///< the fused thread-per-vector kernel applies (d = 128, m % 32 == 0, m <= 256; 5-8 bits: fp32 input or a dense rotation)
  std::vector<int> hadBlocks;    ///< power-of-two block sizes (Hadamard)
  std::vector<float> hadScales;  ///< 1/sqrtf(block) per block, as the CPU computes it
  std::vector<float> signsHost;  ///< +-1 (Hadamard)
  std::vector<float> bndHost, cenHost;
  float qjlScale = 0;                                         ///< sqrt(pi/2)/m as the CPU computes it
  int lutGroup = 1, chunkBits = 0, chunks = 0, patterns = 0;  ///< the CPU's LUT layout
  size_t codeBytes = 0, signBytes = 0;
  size_t lutFloats = 0;  ///< code LUT + sign LUT floats per query
  DevBuf rot;            ///< d x d fp32 row-major R
  DevBuf rotT;           ///< R^T (coalesced reads when a lane computes one output coordinate)
  DevBuf signs;          ///< d fp32 (+-1)
  DevBuf bnd, cen;       ///< boundaries / centroids fp32
  DevBuf S;              ///< m x d fp32 (QJL matrix, for queries)
  DevBuf St;             ///< S^T (d x m)
  DevBuf SRt;            ///< m x d fp32 (S R^T, for residuals in rotated space)
  DevBuf SRtT;           ///< (S R^T)^T (d x m)
  DevBuf srtFrag;        ///< S R^T * 256 split into fp16 hi + lo, in mma.sync B-fragment order (fast path)
  DevBuf rowSign;        ///< per QJL row: bit0 = all entries of S R^T > 0, bit1 = all < 0 (inf/NaN norms)
  DevBuf hadBlocksDev, hadScalesDev;
  uint64_t fingerprint = 0;
};

/// Fingerprint of everything a plan holds (dimension, codebook, rotation, projection).
uint64_t planFingerprint(const Quantizer& q);
/// Builds and uploads a plan (synchronous).
std::shared_ptr<DevPlan> buildPlan(Context& ctx, const Quantizer& q);

/// Device pointers of a compressed set (structure of arrays as in CompressedVectors).
struct DevCompressed {
  uint8_t* codes = nullptr;
  uint8_t* signs = nullptr;
  uint16_t* norms = nullptr;
  uint16_t* rnorms = nullptr;
  size_t count = 0;
};

/// Owning device storage for n compressed vectors of a plan.
struct DevCompressedBuf {
  DevBuf codes, signs, norms, rnorms;
  size_t count = 0;
  void ensure(const DevPlan& p, size_t n);
  DevCompressed view(size_t offset = 0) const;
  const DevPlan* plan = nullptr;
};

/// Scratch buffers owned by the caller (grown as needed).
struct Scratch {
  DevBuf a, b, c, d;
};

// ------------------------------------------------------------------------------------------- kernels
/// Compresses n row vectors (device pointer, element type `type`, row-major n x d) into out[0..n).
void compress(Context& ctx, const DevPlan& p, const void* x, CudaInput type, size_t n, const DevCompressed& out, Scratch& s);
/// Whether compress() takes the fast (thread-per-vector) kernels for this plan and input type.
bool fastPath(const DevPlan& p, CudaInput type);
/// The dense rotation's half of compress() on the fast path (plan not Hadamard): fp32 norms and the rotated
/// unit vectors Y = R x / ||x|| (n x d, fp32; the same cuBLAS product for the same n). compressRotated()
/// quantizes them: the two give compress()'s bytes, so a sweep task rotates its keys once for all variants.
void rotateForCompress(Context& ctx, const DevPlan& p, const void* x, CudaInput type, size_t n, float* Y, float* norms, Scratch& s);
void compressRotated(Context& ctx, const DevPlan& p, const float* Y, const float* norms, size_t n, const DevCompressed& out);
/// Forces the generic (warp-per-vector) compression kernel; for tests of that path.
void compressGeneric(Context& ctx, const DevPlan& p, const void* x, CudaInput type, size_t n, const DevCompressed& out);

/// Rotated queries R q (nq x d) and projected queries S q (nq x m) from fp32 queries (nq x d); the
/// scoring kernel computes the same values itself when it is given raw queries.
void prepareQueries(Context& ctx, const DevPlan& p, const float* q, size_t nq, float* rq, float* sq);
/// Scores without decompressing: query i (of nq) belongs to head i / qPerHead and is scored against keys
/// [head * keysPerHead, head * keysPerHead + keysPerHead) of `keys`; out[i * outStride + t]. Give either
/// raw fp32 queries (nq x d; rq = sq = nullptr) or prepared ones (queries = nullptr, rq / sq from
/// prepareQueries). Each block rotates/projects its query and builds the CPU's look-up tables (same layout
/// and summation order) in shared memory.
void scores(Context& ctx, const DevPlan& p, const DevCompressed& keys, size_t keysPerHead, const float* queries, const float* rq, const float* sq,
            size_t nq, size_t qPerHead, float* out, size_t outStride, Scratch& s);
/// MSE reconstructions x_hat = n16 R^T c[idx] of n vectors: fp32 out (n x d) or, when half, fp16 bits.
void decompress(Context& ctx, const DevPlan& p, const DevCompressed& cv, size_t n, void* out, bool half, Scratch& s);
/// Row-wise softmax(scale * s) of nq rows of n (row stride ld) into w (same layout).
void softmaxRows(Context& ctx, const float* s, size_t nq, size_t n, size_t ld, float scale, float* w);
/// out (nq x d) = sum_t w[i * ld + t] x_hat_t for values [head * valuesPerHead, ... + n) with
/// head = i / qPerHead; accumulated in rotated space, R^T applied once per row.
void weightedSum(Context& ctx, const DevPlan& p, const DevCompressed& values, size_t valuesPerHead, size_t n, const float* w, size_t ld, size_t nq,
                 size_t qPerHead, float* out, Scratch& s);

/// Device buffers of evaluateTask, kept between tasks (grown as needed).
struct TaskBuffers {
  DevBuf keys, values, valuesD, queries, limits, exact, probs, exactOut, estimate, weights, estOut, recon, perVector, results;
  DevBuf sq, z;  ///< the dense QJL term: S q per query (nq x m) and the keys' scaled signs (seq x m)
  DevBuf rotY, rotN;  ///< the keys rotated once per task: R x / ||x|| (seq x d) and fp32 norms
  DevBuf stageEst, stageErr;  ///< per shared MSE stage: its <q, x_mse> (nq x seq fp32) and vector errors (seq doubles)
  DevCompressedBuf compKeys;
  std::vector<DevCompressedBuf> compValues;
  std::vector<DevBuf> valueRecon;  ///< per value width: its reconstruction (seq x dv fp32), for the output products
};
/// A sweep cell's inputs and exact references kept on the device across sweeps (CudaBackend's resident
/// cells, under SweepTaskInput::cellId): the first task of the cell fills them on its lane's stream and
/// records `ready` there; later tasks, on any lane, wait for `ready` and only read them.
struct ResidentCell {
  DevBuf keys, values, valuesD, queries, limits, exact, probs, exactOut;
  void* ready = nullptr;  ///< cudaEvent_t, made by the filling task
  size_t bytes() const {
    return keys.bytes() + values.bytes() + valuesD.bytes() + queries.bytes() + limits.bytes() + exact.bytes() + probs.bytes() + exactOut.bytes();
  }
  ResidentCell() = default;
  ResidentCell(const ResidentCell&) = delete;
  ResidentCell& operator=(const ResidentCell&) = delete;
  ~ResidentCell();
};
/// The device bytes a ResidentCell of these sizes holds (for the cache's budget, before filling one).
size_t residentCellBytes(size_t seq, size_t d, size_t dv, size_t nq, bool values);

/// One sweep task on the device (see SweepTaskInput): all key variants' metrics, output errors per value
/// bit-width, key / value vector MSE; plans in the order of in.keyQuantizers / in.valueQuantizers.
/// `cell` (optional): with `cellFilled`, the cell's inputs and exact references are read from it (in.keys,
/// in.values, in.queries and in.limits are not read); without, they are uploaded and computed into it and
/// its `ready` event is recorded. Without `cell`, into `b`.
void evaluateTask(Context& ctx, const std::vector<const DevPlan*>& keyPlans, const std::vector<const DevPlan*>& valuePlans, const SweepTaskInput& in,
                  SweepTaskOutput& out, TaskBuffers& b, Scratch& s, ResidentCell* cell = nullptr, bool cellFilled = false);

/// fp32 -> fp16/bf16 bits conversion on the device (benchmarks, tests).
void convertF32(Context& ctx, const float* in, size_t n, CudaInput type, void* out);
/// Synthetic data on the device: keys with per-channel offsets/scales and a few outlier channels.
void fillSynthetic(Context& ctx, float* out, size_t rows, int dim, uint64_t seed, float outlierScale);

}  // namespace cuda
}  // namespace tq
