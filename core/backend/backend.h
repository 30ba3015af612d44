// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Where the heavy work runs. The CPU backend is always available and is the reference; a CUDA backend
/// (core/cuda, built when nvcc is found) implements the same interface and must produce bit-identical
/// codes. Callers always learn which backend and device actually ran.
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "methods/methods.h"
#include "quant/quantizer.h"

namespace tq {

enum class BackendChoice { Auto, Cpu, Cuda };
const char* backendChoiceName(BackendChoice c);
/// "auto", "cpu", "cuda"; throws std::invalid_argument otherwise.
BackendChoice parseBackendChoice(const std::string& s);

/// One (layer, kv head) of an evaluation sweep: everything a backend needs to evaluate all key variants
/// (and value bit-widths) in one go. The metrics are those of core/metrics (attentionMetrics, vectorMse).
struct SweepTaskInput {
  const float* keys = nullptr;     ///< seq x d
  const float* values = nullptr;   ///< seq x dv, nullptr: values are not evaluated
  size_t seq = 0;
  int d = 0, dv = 0;
  double scale = 1;                ///< softmax scale
  const float* queries = nullptr;  ///< nq x d: the queries of every query head of this kv head, head after head
  const int* limits = nullptr;     ///< nq: last visible key index of each query (causal mask)
  size_t nq = 0;
  std::vector<const Quantizer*> keyQuantizers;    ///< one per key variant
  std::vector<const Quantizer*> valueQuantizers;  ///< one per value bit-width (empty when values is nullptr)
  /// Key centering (all optional): the key quantizers compress compressKeys (seq x d, the keys minus a
  /// per-head mean mu) instead of keys; keyOffset (d, mu as stored) is added back to every compressed key,
  /// i.e. <q, mu> to each estimated score; the first exactKeys keys are kept uncompressed (a window whose
  /// scores are the exact ones). Exact scores always use keys.
  const float* compressKeys = nullptr;
  const float* keyOffset = nullptr;
  size_t exactKeys = 0;
  /// The recent fp16 window (SweepConfig::recentWindow): the last recentExact keys score exactly and the
  /// last recentExact values are used as they are; codecs encode only the tokens before it.
  size_t recentExact = 0;
  /// Reconstruction codecs (core/methods: KIVI, int-rot, fp8, fp16, tq-mse-nc), evaluated after the
  /// quantizers: key variant nk_q + i is keyCodecs[i], value variant nv_q + j is valueCodecs[j]. A device
  /// backend may decline a task that has any. Their keys see compressKeys like the quantizers'.
  std::vector<const VectorCodec*> keyCodecs, valueCodecs;
  /// Optional pairing: the output error of key variant k with value variant v is computed only when
  /// keyFamily[k] == valueFamily[v] (both empty: every pair). Sizes: all key / value variants.
  std::vector<int> keyFamily, valueFamily;
  /// Nonzero: names this cell's keys, values and queries for the whole life of the data set (a mix of
  /// KvSource::instanceId, the layer and the kv head). A device backend may keep them and their exact
  /// references resident under it (with a hash of the queries and sizes) for later sweeps; 0: not kept.
  uint64_t cellId = 0;
  uint64_t dataId = 0;  ///< KvSource::instanceId of the cell's data set (with cellId)
  const std::atomic<bool>* cancel = nullptr;      ///< checked often (CPU: every block of keys): when set, the output is incomplete
  std::function<bool()> stop;                     ///< polled with cancel (e.g. a user's Cancel); true: stop
};

struct SweepTaskOutput {
  static constexpr int kKeyMetrics = 9;  ///< logit cos, attention cos, KL, top-1, top-5, bias, variance, slope, correlation
  std::vector<double> keyMetrics;   ///< [key variant][query][kKeyMetrics]
  std::vector<double> outputError;  ///< [key variant][value variant][query]
  std::vector<double> keyMse;       ///< per key variant (vectorMse of the MSE stage; 1 when it has none)
  std::vector<double> valueMse;     ///< per value variant
  /// Bytes per vector held by each codec's buffers (EncodedMatrix::bytes() / the tokens encoded: a key
  /// codec does not encode the exact window), keys then values.
  std::vector<double> keyCodecBytes, valueCodecBytes;
};

class Backend {
 public:
  virtual ~Backend() = default;
  /// "CPU" or "CUDA".
  virtual std::string name() const = 0;
  /// Human description of the device, e.g. "AMD EPYC, 2 threads" or "NVIDIA H100 80GB HBM3 (79.1 GiB, driver 12.8)".
  virtual std::string device() const = 0;

  /// Compress n row vectors (fp32, row-major n x d) and append to out; same bytes as Quantizer::compress.
  virtual void compress(const Quantizer& q, const float* x, size_t n, CompressedVectors& out) = 0;
  /// Scores of nq queries (row-major nq x d) against all keys: out is nq x keys.count, estimated <q, k>.
  virtual void scores(const Quantizer& q, const CompressedVectors& keys, const float* queries, size_t nq, float* out) = 0;
  /// MSE reconstructions of all vectors (count x d).
  virtual void decompress(const Quantizer& q, const CompressedVectors& cv, float* out) = 0;
  /// For each of nq weight rows (nq x count): sum_i w_i x_hat_i -> out (nq x d).
  virtual void weightedSum(const Quantizer& q, const CompressedVectors& values, const float* weights, size_t nq, float* out) = 0;
  /// Optional: evaluates a whole sweep task on the backend's device (one upload, one download). Returns
  /// false when the backend does not offer it (or could not run it; it then says why on stderr), and the
  /// sweep runner evaluates the task call by call.
  virtual bool evaluateTask(const SweepTaskInput& in, SweepTaskOutput& out) {
    (void)in;
    (void)out;
    return false;
  }
};

/// The CPU evaluation of a sweep task (core/backend/cpu_task.cpp): the same codes as Quantizer::compress,
/// the estimator in dense form (matrix products over the MSE reconstruction and the stored signs). Single
/// threaded: the sweep runs tasks in parallel. Returns early (incomplete output) when in.cancel is set.
void cpuEvaluateTask(const SweepTaskInput& in, SweepTaskOutput& out);
bool cancelRequested(const SweepTaskInput& in);
/// Estimated <q, k_hat> of nq queries (nq x d) against every vector of kc (out: nq x count), in the dense
/// form of cpuEvaluateTask: the estimator of Quantizer::scores up to float summation order. Single threaded.
void denseScores(const Quantizer& q, const CompressedVectors& kc, const float* queries, size_t nq, float* out);

/// The CPU engine (multi-threaded).
std::unique_ptr<Backend> makeCpuBackend();

}  // namespace tq
