// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The CUDA backend (issue #4). This header has no CUDA types: it can be included by any C++17
/// translation unit of a build that has TQ_HAVE_CUDA defined (the tq_cuda target defines it).
///
/// Codes, signs and fp16 norms are bit-identical to the CPU engine for the Hadamard rotation; for
/// the dense (Haar / explicit) rotation they agree except at ties (a rotated coordinate within ~1e-6
/// of a boundary, a projection within ~1e-6 relative of zero). Scores match within 1e-5 relative.
/// Any CUDA failure (no driver, no device, out of memory, a kernel error) gives a clear message and
/// the CPU path: makeCudaBackend() returns nullptr with the reason, and a CudaBackend that fails
/// during a call runs that call on the CPU, prints the reason to stderr once and reports it through
/// fallbackReason(); after a non-recoverable error it stays on the CPU and name() says "CPU".
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/bench_record.h"
#include "quant/quantizer.h"

namespace tq {

/// What cudaProbe() found. Never throws; available == false with error set when there is no usable device.
struct CudaDeviceInfo {
  bool available = false;
  std::string name;            ///< e.g. "NVIDIA H200"
  size_t totalMemory = 0;      ///< bytes
  size_t freeMemory = 0;       ///< bytes, at probe time
  int driverVersion = 0;       ///< e.g. 13000 for CUDA 13.0
  int runtimeVersion = 0;
  int computeMajor = 0, computeMinor = 0;
  int multiprocessors = 0;
  double peakBandwidthGBs = 0; ///< from memory clock x bus width (datasheet-like peak)
  std::string error;           ///< why not available (driver missing, no device, ...)
  /// One line, e.g. "NVIDIA H200 (139.8 GiB, cc 9.0, 132 SMs, driver 13.0, runtime 13.0, 4.8 TB/s peak)".
  std::string describe() const;
};

/// Probes device 0. Never throws.
CudaDeviceInfo cudaProbe();

/// Input element types the CUDA kernels read directly (the Backend interface uses F32).
enum class CudaInput { F32, F16, BF16 };

class CudaBackend : public Backend {
 public:
  ~CudaBackend() override;
  /// "CUDA", or "CPU" once a non-recoverable CUDA error moved this backend to the CPU for good.
  std::string name() const override;
  std::string device() const override;
  void compress(const Quantizer& q, const float* x, size_t n, CompressedVectors& out) override;
  void scores(const Quantizer& q, const CompressedVectors& keys, const float* queries, size_t nq, float* out) override;
  void decompress(const Quantizer& q, const CompressedVectors& cv, float* out) override;
  void weightedSum(const Quantizer& q, const CompressedVectors& values, const float* weights, size_t nq, float* out) override;
  /// A whole sweep task on the device (metrics computed there in double precision); false after a CUDA
  /// error (reason on stderr, as for every call), and the sweep runner then evaluates it call by call.
  bool evaluateTask(const SweepTaskInput& in, SweepTaskOutput& out) override;

  /// Compress from host data of the given element type (fp16 / bf16 bits as uint16_t, or float):
  /// the kernels convert on load, so fp16 input gives the same codes as its exact fp32 conversion.
  void compressTyped(const Quantizer& q, const void* x, CudaInput type, size_t n, CompressedVectors& out);
  /// Decode-style attention for one query per row of `queries` against all keys/values:
  /// softmax(scale * scores) . V_hat, computed from the compressed buffers on the device.
  void attention(const Quantizer& kq, const CompressedVectors& keys, const Quantizer& vq, const CompressedVectors& values,
                 const float* queries, size_t nq, float scale, float* out);

  /// True when the last call (or any call, for `ever`) ran on the CPU because of a CUDA error.
  bool fellBack(bool ever = false) const;
  /// The message of the most recent fallback ("" when none).
  std::string fallbackReason() const;
  const CudaDeviceInfo& info() const;
  /// Resident sweep cells (see SweepTaskInput::cellId): tasks that read a kept cell, cells filled, and the
  /// device bytes kept now.
  struct ResidentStats {
    long long hits = 0, fills = 0;
    size_t bytes = 0;
  };
  ResidentStats residentStats() const;

  struct Impl;

 private:
  friend std::unique_ptr<Backend> makeCudaBackend(std::string* why);
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> m_impl;
};

/// A CUDA backend on device 0, or nullptr with the reason in *why (no driver, no device, init failure).
std::unique_ptr<Backend> makeCudaBackend(std::string* why);

/// Runtime dispatch: Cpu -> CPU; Cuda -> CUDA, or CPU with *message saying why not; Auto -> CUDA when a
/// device is present, else CPU (with *message saying why). *message is empty when the choice was honoured.
std::unique_ptr<Backend> selectBackend(BackendChoice choice, std::string* message);

/// The fallback note of a backend made by makeCudaBackend()/selectBackend() ("" for others or when none).
std::string backendFallbackNote(const Backend& b);

struct CudaBenchOptions {
  int dim = 128;
  int bits = 3;                  ///< key bits (Prod: bits-1 MSE bits + QJL)
  int projDim = 0;               ///< 0 = dim
  bool hadamard = true;          ///< false: Haar (dense, cuBLAS fp32 rotation)
  size_t vectors = 262144;       ///< vectors for the compression benchmarks (8 heads x 32K tokens)
  int valueBits = 4;             ///< value (MSE) bits for decompression / aggregation
  int heads = 8;                 ///< heads for the scoring benchmarks
  std::vector<size_t> tokens{32768, 1048576};  ///< tokens per head for the scoring benchmarks
  size_t prefillQueries = 256;   ///< queries per head for the Q x K grid benchmark
  int repetitions = 20;          ///< timed repetitions (median reported), after warm-up
  int warmup = 3;
  bool inputTypes = true;        ///< also time bf16 and fp32 inputs
  bool compression = true;       ///< time key / value compression
  bool values = true;            ///< time aggregation, attention decode, decompression, Backend end to end
  bool sweep = true;             ///< the device-resident evaluation sweep (32 layers x 8 heads x 8192 tokens)
  int sweepLayers = 32, sweepHeads = 8, sweepTokens = 8192, sweepQueries = 32;
  uint64_t seed = 42;
};

/// Runs the CUDA benchmarks (CUDA events, median of >= repetitions after warm-up, data on the device)
/// with cuBLAS fp16 GEMV/GEMM and a device-to-device copy measured in the same process as baselines.
/// Throws std::runtime_error when no device is usable.
std::vector<BenchRecord> cudaBenchmark(const CudaBenchOptions& opts);

}  // namespace tq
