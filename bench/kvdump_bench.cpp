// SPDX-License-Identifier: GPL-3.0-or-later
// KvDump loading benchmark: writes a ~1 GB fp16 tq-kvdump/1 safetensors file, then measures (each in a
// fresh child process, so getrusage's peak RSS belongs to that measurement alone)
//   open_summary        open -> summary, headers only (scanOnOpen = false)          target < 1 s
//   open_summary_scan   open -> summary with the NaN/Inf scan of every tensor (streams the whole file)
//   read_layer          one layer's keys, values and queries converted to fp32 and held at once;
//                       peak RSS vs the layer's fp32 bytes                          target < 1.3x
//   evaluate_layer      the same layer evaluated head by head (norm statistics), nothing kept;
//                       peak RSS vs the layer's bytes in the file
// Prints one JSON object per measurement. Timings are with the file in the page cache (it was just written).
//
//   kvdump_bench [--path /tmp/tq_kvdump_bench.safetensors] [--gb 1.0] [--layer 7] [--keep]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "data/kv_dump.h"
#include "data/safetensors.h"
#include "util/half.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kLayers = 16, kKvHeads = 8, kQHeads = 32, kHeadDim = 128;

long peakRssKiB() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Writes the dump by streaming: header first, then every tensor from a fixed buffer of fp16 values.
uint64_t writeDump(const std::string& path, int seq) {
  std::vector<tq::TensorInfo> tensors;
  uint64_t off = 0;
  for (int l = 0; l < kLayers; ++l)
    for (const char* r : {"k", "v", "q"}) {
      tq::TensorInfo t;
      t.name = "layers." + std::to_string(l) + "." + r;
      t.dtype = tq::DType::F16;
      const int heads = r[0] == 'q' ? kQHeads : kKvHeads;
      t.shape = {heads, seq, kHeadDim};
      t.begin = off;
      off += static_cast<uint64_t>(heads) * static_cast<uint64_t>(seq) * kHeadDim * 2;
      t.end = off;
      tensors.push_back(t);
    }
  std::map<std::string, std::string> md = {{"format", "tq-kvdump/1"},
                                           {"model", "synthetic-bench"},
                                           {"num_layers", std::to_string(kLayers)},
                                           {"num_q_heads", std::to_string(kQHeads)},
                                           {"num_kv_heads", std::to_string(kKvHeads)},
                                           {"head_dim", std::to_string(kHeadDim)}};
  const std::vector<uint8_t> header = tq::SafetensorsWriter::header(tensors, md);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fwrite(header.data(), 1, header.size(), f);
  // 4 MiB of pseudo-random fp16 values in [-4, 4), written repeatedly with a shifting start.
  std::vector<uint16_t> buf(2u << 20);
  uint64_t x = 0x2545f4914f6cdd1dull;
  for (auto& h : buf) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    h = tq::floatToHalf(static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 8.0 - 4.0));
  }
  uint64_t left = off, shift = 0;
  while (left > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size() * 2 - 2 * (shift % 1024)));
    std::fwrite(reinterpret_cast<const uint8_t*>(buf.data()) + 2 * (shift % 1024), 1, n, f);
    left -= n;
    ++shift;
  }
  if (std::fclose(f) != 0) {
    std::perror("write");
    std::exit(1);
  }
  return header.size() + off;
}

// Runs fn in a child process; fn writes its JSON line to stdout.
template <class F>
void inChild(F&& fn) {
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    int rc = 0;
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      rc = 1;
    }
    std::fflush(stdout);
    _exit(rc);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "measurement failed\n");
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = "/tmp/tq_kvdump_bench.safetensors";
  double gb = 1.0;
  int layer = 7;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--path" && i + 1 < argc) path = argv[++i];
    else if (a == "--gb" && i + 1 < argc) gb = std::atof(argv[++i]);
    else if (a == "--layer" && i + 1 < argc) layer = std::atoi(argv[++i]);
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "usage: %s [--path file] [--gb size] [--layer L] [--keep]\n", argv[0]);
      return 2;
    }
  }
  const double perToken = static_cast<double>(kLayers) * (2 * kKvHeads + kQHeads) * kHeadDim * 2;
  const int seq = std::max(16, static_cast<int>(gb * 1e9 / perToken) / 16 * 16);
  layer = std::clamp(layer, 0, kLayers - 1);

  const auto w0 = Clock::now();
  const uint64_t fileBytes = writeDump(path, seq);
  const double writeSec = seconds(w0, Clock::now());
  const uint64_t layerFileBytes = static_cast<uint64_t>(2 * kKvHeads + kQHeads) * static_cast<uint64_t>(seq) * kHeadDim * 2;
  const uint64_t layerFp32Bytes = layerFileBytes * 2;
  std::printf("{\"operation\": \"kvdump_write\", \"file\": \"%s\", \"file_bytes\": %llu, \"layers\": %d, \"q_heads\": %d, \"kv_heads\": %d, "
              "\"head_dim\": %d, \"seq\": %d, \"dtype\": \"F16\", \"seconds\": %.3f}\n",
              path.c_str(), static_cast<unsigned long long>(fileBytes), kLayers, kQHeads, kKvHeads, kHeadDim, seq, writeSec);

  for (bool scan : {false, true}) {
    inChild([&] {
      std::vector<double> t;
      const long rss0 = peakRssKiB();
      tq::KvDumpSummary s;
      for (int rep = 0; rep < 3; ++rep) {
        tq::LoadOptions o;
        o.scanOnOpen = scan;
        const auto a = Clock::now();
        auto d = tq::KvDump::open(path, o);
        s = d->summary();
        t.push_back(seconds(a, Clock::now()));
      }
      std::sort(t.begin(), t.end());
      std::printf("{\"operation\": \"%s\", \"file_bytes\": %llu, \"seconds_median\": %.4f, \"seconds_min\": %.4f, \"repetitions\": 3, "
                  "\"gb_per_second\": %.2f, \"peak_rss_mib\": %.1f, \"rss_before_mib\": %.1f, \"target_seconds\": %s, \"summary\": \"%s\"}\n",
                  scan ? "kvdump_open_summary_scan" : "kvdump_open_summary", static_cast<unsigned long long>(fileBytes), t[1], t[0],
                  scan ? static_cast<double>(fileBytes) / t[1] / 1e9 : 0.0, static_cast<double>(peakRssKiB()) / 1024.0,
                  static_cast<double>(rss0) / 1024.0, scan ? "null" : "1.0", s.describe().c_str());
    });
  }

  // One layer held as fp32.
  inChild([&] {
    tq::LoadOptions o;
    o.scanOnOpen = false;
    auto d = tq::KvDump::open(path, o);
    const long before = peakRssKiB();
    const auto a = Clock::now();
    std::vector<std::vector<float>> held;
    for (int h = 0; h < kKvHeads; ++h) {
      held.push_back(d->keys(layer, h));
      held.push_back(d->values(layer, h));
    }
    for (int h = 0; h < kQHeads; ++h) held.push_back(d->queries(layer, h));
    const double sec = seconds(a, Clock::now());
    size_t heldBytes = 0;
    for (const auto& v : held) heldBytes += v.size() * sizeof(float);
    const long peak = peakRssKiB();
    const double peakB = static_cast<double>(peak) * 1024.0, beforeB = static_cast<double>(before) * 1024.0;
    std::printf("{\"operation\": \"kvdump_read_layer\", \"layer\": %d, \"layer_file_bytes\": %llu, \"layer_fp32_bytes\": %llu, \"held_bytes\": %zu, "
                "\"seconds\": %.4f, \"gb_per_second_fp32_out\": %.2f, \"peak_rss_mib\": %.1f, \"rss_before_mib\": %.1f, "
                "\"peak_rss_over_layer_fp32\": %.3f, \"rss_growth_over_layer_fp32\": %.3f, \"target_ratio\": 1.3}\n",
                layer, static_cast<unsigned long long>(layerFileBytes), static_cast<unsigned long long>(layerFp32Bytes), heldBytes, sec,
                static_cast<double>(heldBytes) / sec / 1e9, peakB / 1048576.0, beforeB / 1048576.0, peakB / static_cast<double>(layerFp32Bytes),
                (peakB - beforeB) / static_cast<double>(layerFp32Bytes));
  });

  // The same layer evaluated head group by head group (kv head + its query heads), nothing kept.
  inChild([&] {
    tq::LoadOptions o;
    o.scanOnOpen = false;
    auto d = tq::KvDump::open(path, o);
    const long before = peakRssKiB();
    const auto a = Clock::now();
    double sumNorm = 0;
    const int group = kQHeads / kKvHeads;
    for (int h = 0; h < kKvHeads; ++h) {
      std::vector<std::vector<float>> parts;
      parts.push_back(d->keys(layer, h));
      parts.push_back(d->values(layer, h));
      for (int g = 0; g < group; ++g) parts.push_back(d->queries(layer, h * group + g));
      for (const auto& p : parts)
        for (size_t i = 0; i < p.size(); i += kHeadDim) {
          double s = 0;
          for (int j = 0; j < kHeadDim; ++j) s += static_cast<double>(p[i + static_cast<size_t>(j)]) * p[i + static_cast<size_t>(j)];
          sumNorm += std::sqrt(s);
        }
    }
    const double sec = seconds(a, Clock::now());
    const long peak = peakRssKiB();
    const double peakB = static_cast<double>(peak) * 1024.0, beforeB = static_cast<double>(before) * 1024.0;
    std::printf("{\"operation\": \"kvdump_evaluate_layer_streaming\", \"layer\": %d, \"layer_file_bytes\": %llu, \"seconds\": %.4f, "
                "\"peak_rss_mib\": %.1f, \"rss_before_mib\": %.1f, \"peak_rss_over_layer_file_bytes\": %.3f, \"rss_growth_over_layer_file_bytes\": %.3f, "
                "\"checksum\": %.6g}\n",
                layer, static_cast<unsigned long long>(layerFileBytes), sec, peakB / 1048576.0, beforeB / 1048576.0,
                peakB / static_cast<double>(layerFileBytes), (peakB - beforeB) / static_cast<double>(layerFileBytes), sumNorm);
  });
  if (!keep) std::remove(path.c_str());
  return 0;
}
