// SPDX-License-Identifier: GPL-3.0-or-later
#include <fstream>
#include <stdexcept>
#include <string>

#include "backend/backend.h"
#include "util/parallel.h"

namespace tq {

const char* backendChoiceName(BackendChoice c) {
  switch (c) {
    case BackendChoice::Auto: return "auto";
    case BackendChoice::Cpu: return "cpu";
    default: return "cuda";
  }
}

BackendChoice parseBackendChoice(const std::string& s) {
  if (s == "auto") return BackendChoice::Auto;
  if (s == "cpu") return BackendChoice::Cpu;
  if (s == "cuda" || s == "gpu") return BackendChoice::Cuda;
  throw std::invalid_argument("unknown backend '" + s + "' (expected auto, cpu or cuda)");
}

namespace {

std::string cpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  }
  return "CPU";
}

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "CPU"; }
  std::string device() const override { return cpuModel() + ", " + std::to_string(cpuThreads()) + " threads"; }
  void compress(const Quantizer& q, const float* x, size_t n, CompressedVectors& out) override { q.compress(x, n, out); }
  void scores(const Quantizer& q, const CompressedVectors& keys, const float* queries, size_t nq, float* out) override {
    q.scoresMany(queries, nq, keys, out);
  }
  void decompress(const Quantizer& q, const CompressedVectors& cv, float* out) override {
    const size_t d = static_cast<size_t>(q.dim());
    parallelRanges(cv.count, 1024, [&](size_t b, size_t e) { q.decompress(cv, b, e - b, out + b * d); });
  }
  void weightedSum(const Quantizer& q, const CompressedVectors& values, const float* weights, size_t nq, float* out) override {
    const size_t d = static_cast<size_t>(q.dim());
    parallelRanges(nq, 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) q.weightedSum(values, weights + i * values.count, out + i * d);
    });
  }
  bool evaluateTask(const SweepTaskInput& in, SweepTaskOutput& out) override {
    cpuEvaluateTask(in, out);
    return true;
  }
};

}  // namespace

std::unique_ptr<Backend> makeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace tq
