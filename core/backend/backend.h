// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Where the heavy work runs. The CPU backend is always available and is the reference; a CUDA backend
/// (core/cuda, built when nvcc is found) implements the same interface and must produce bit-identical
/// codes. Callers always learn which backend and device actually ran.
#include <cstddef>
#include <memory>
#include <string>

#include "quant/quantizer.h"

namespace tq {

enum class BackendChoice { Auto, Cpu, Cuda };
const char* backendChoiceName(BackendChoice c);
/// "auto", "cpu", "cuda"; throws std::invalid_argument otherwise.
BackendChoice parseBackendChoice(const std::string& s);

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
};

/// The CPU engine (multi-threaded).
std::unique_ptr<Backend> makeCpuBackend();

}  // namespace tq
