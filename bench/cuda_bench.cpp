// SPDX-License-Identifier: GPL-3.0-or-later
// tq_cuda_bench: the CUDA backend's benchmarks (one JSON object per line on stdout), a short table
// on stderr. Baselines (device-to-device copy, cuBLAS fp16 GEMV/GEMM) are measured in the same process.
//   tq_cuda_bench [--quick] [--no-sweep] [--no-haar] [--backend-sweep] [--backend-sweep-layers L] [--vectors N]
//                 [--no-compress] [--no-values] [--tokens T]   (--tokens: one scoring size, tokens per head)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "synth/synthetic.h"
#include "sweep/sweep.h"
#include "util/parallel.h"

using namespace tq;

namespace {

nlohmann::ordered_json toJson(const BenchRecord& r) {
  nlohmann::ordered_json j;
  j["operation"] = r.operation;
  j["backend"] = r.backend;
  j["device"] = r.device;
  j["dim"] = r.dim;
  j["bits"] = r.bits;
  j["proj_dim"] = r.projDim;
  j["rotation"] = r.rotation;
  j["vectors"] = r.vectors;
  j["seconds"] = r.seconds;
  j["vectors_per_second"] = r.vectorsPerSecond;
  j["bytes_moved"] = r.bytesMoved;
  j["gb_per_second"] = r.gbPerSecond;
  j["percent_of_peak"] = r.percentOfPeak;
  j["repetitions"] = r.repetitions;
  j["note"] = r.note;
  return j;
}

void print(const std::vector<BenchRecord>& recs) {
  for (const auto& r : recs) {
    std::cout << toJson(r).dump() << "\n";
    std::fprintf(stderr, "%-32s %-9s b%d m%-4d %12.4g vec/s %9.1f GB/s %6.1f%%  %s\n", r.operation.c_str(), r.rotation.c_str(), r.bits, r.projDim,
                 r.vectorsPerSecond, r.gbPerSecond, r.percentOfPeak, r.note.substr(0, 110).c_str());
  }
  std::cout.flush();
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, sweep = true, haar = true, backendSweep = false;
  int backendSweepLayers = 32;
  size_t vectors = 262144, tokens = 0;
  bool compression = true, values = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--no-sweep") sweep = false;
    else if (a == "--no-haar") haar = false;
    else if (a == "--backend-sweep") backendSweep = true;
    else if (a == "--backend-sweep-layers" && i + 1 < argc) backendSweepLayers = std::atoi(argv[++i]);
    else if (a == "--vectors" && i + 1 < argc) vectors = static_cast<size_t>(std::atoll(argv[++i]));
    else if (a == "--tokens" && i + 1 < argc) tokens = static_cast<size_t>(std::atoll(argv[++i]));
    else if (a == "--no-compress") compression = false;
    else if (a == "--no-values") values = false;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  const CudaDeviceInfo info = cudaProbe();
  if (!info.available) {
    std::fprintf(stderr, "no usable CUDA device: %s\n", info.error.c_str());
    return 77;
  }
  nlohmann::ordered_json dev;
  dev["device"] = info.name;
  dev["memory_bytes"] = info.totalMemory;
  dev["driver_version"] = info.driverVersion;
  dev["runtime_version"] = info.runtimeVersion;
  dev["compute_capability"] = std::to_string(info.computeMajor) + "." + std::to_string(info.computeMinor);
  dev["multiprocessors"] = info.multiprocessors;
  dev["peak_bandwidth_gbs"] = info.peakBandwidthGBs;
  std::cout << nlohmann::ordered_json({{"device_info", dev}}).dump() << "\n";
  std::fprintf(stderr, "%s\n", info.describe().c_str());
  try {
    CudaBenchOptions o;
    o.vectors = vectors;
    o.sweep = sweep;
    o.compression = compression;
    o.values = values;
    if (quick) {
      o.tokens = {32768};
      o.repetitions = 20;
      o.sweep = false;
    }
    if (tokens > 0) o.tokens = {tokens};
    print(cudaBenchmark(o));
    if (haar) {
      CudaBenchOptions h = o;
      h.hadamard = false;
      h.inputTypes = false;
      h.tokens = {32768};
      h.compression = compression;
      h.values = values;
      h.sweep = sweep && !quick;
      print(cudaBenchmark(h));
    }
    if (backendSweep) {
      // The project's sweep runner (core/sweep) through the Backend interface with this CUDA backend.
      SyntheticSpec spec;
      spec.layers = backendSweepLayers;
      spec.kvHeads = 8;
      spec.qHeads = 8;
      spec.tokens = 8192;
      spec.headDim = 128;
      SyntheticKv src(spec);
      SweepConfig sc;
      sc.keyBits = {1, 2, 3, 4};
      sc.modes = {KeyMode::Mse, KeyMode::Prod};
      sc.projDims = {32, 64, 128};
      sc.rotation = RotationKind::Hadamard;
      std::string why;
      auto be = makeCudaBackend(&why);
      // the floor: producing every (layer, head)'s keys and values from the source on all cores
      const auto tr = std::chrono::steady_clock::now();
      parallelRanges(static_cast<size_t>(spec.layers) * spec.kvHeads, 1, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
          const auto k = src.keys(static_cast<int>(i) / spec.kvHeads, static_cast<int>(i) % spec.kvHeads);
          const auto v = src.values(static_cast<int>(i) / spec.kvHeads, static_cast<int>(i) % spec.kvHeads);
          if (k.empty() || v.empty()) throw std::runtime_error("empty synthetic head");
        }
      });
      const double sRead = std::chrono::duration<double>(std::chrono::steady_clock::now() - tr).count();
      const auto t0 = std::chrono::steady_clock::now();
      const SweepResult res = runSweep(src, sc, *be);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto sum = res.summary();
      BenchRecord r;
      r.operation = "evaluation_sweep_runSweep";
      r.backend = "cuda";
      r.device = info.name;
      r.dim = 128;
      r.rotation = "hadamard";
      r.vectors = static_cast<size_t>(spec.layers) * 8 * 8192;
      r.seconds = s;
      r.vectorsPerSecond = static_cast<double>(r.vectors) / s;
      r.repetitions = 1;
      r.note = "core/sweep runSweep (as the CLI and the GUI run it) on " + res.backend + ", end to end from the synthetic source: " +
               std::to_string(spec.layers) + " layers x 8 kv heads x 8192 tokens, " + std::to_string(keyVariants(sc, 128).size()) +
               " key variants, " + std::to_string(res.rows.size()) + " rows, values 3-bit, 32 dump queries/head; " + std::to_string(cpuThreads()) +
               " host threads; reading the source alone (all heads, keys + values, same threads) " + std::to_string(sRead) + " s" +
               (static_cast<CudaBackend&>(*be).fellBack(true) ? "; FELL BACK: " + static_cast<CudaBackend&>(*be).fallbackReason() : "");
      for (const auto& x : sum)
        if (x.key.bits == 3 && (x.key.mode == KeyMode::Mse || x.key.projDim == 128))
          r.note += "; " + std::string(keyModeName(x.key.mode)) + "3 m128: attention cos " + std::to_string(x.mean.attentionCosine) + " top-1 " +
                    std::to_string(x.mean.top1) + " KL " + std::to_string(x.mean.kl);
      print({r});
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "benchmark failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
