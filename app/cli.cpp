// SPDX-License-Identifier: GPL-3.0-or-later
#include "cli.h"

#include <unistd.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include "attention/attention.h"
#include "backend/backend.h"
#include "backend/bench_record.h"
#include "codebook/codebook.h"
#include "backend_select.h"
#include "explore/allocate.h"
#include "explore/export.h"
#include "data/compressed_io.h"
#include "data/kv_dump.h"
#include "data/samples.h"
#include "data/safetensors.h"
#include "sweep/sweep.h"
#include "metrics/metrics.h"
#include "quant/quantizer.h"
#include "util/memory_budget.h"
#include "util/parallel.h"
#include "util/rng.h"
#include "validation/crosscheck.h"
#include "validation/validate.h"
#ifdef TQ_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif
#ifdef TQ_HAVE_UI
#include "headless.h"
#endif

namespace tq {

using json = nlohmann::ordered_json;

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: tqstudio-cli <command> [options]\n"
    "commands:\n"
    "  validate   [--dim D] [--bits LIST] [--vectors N] [--seed S] [--rotation haar|hadamard] [--json]\n"
    "             synthetic checks: codebooks, MSE vs theory and the paper's bounds, inner-product bias/\n"
    "             variance/slope on correlated pairs, needle retrieval, cache bytes vs the formula\n"
    "  crosscheck --reference FILE [--json]   rebuild quantizers from a reference file's tensors and compare\n"
    "  bench      [--backend cpu|cuda] [--dim D] [--bits B] [--proj-dim M] [--rotation haar|hadamard]\n"
    "             [--vectors N] [--repeat R] [--json]\n"
    "  memory     --model PRESET | --layers L --kv-heads H --head-dim D [--tokens T] [--key-bits B]\n"
    "             [--value-bits B] [--mode mse|prod|qjl] [--proj-dim M] [--recent-window N] [--json]\n"
    "  presets    list the model presets\n"
    "  export-lesson FILE|sample --out DIR [--format pdf,png,svg] [--size WxH] [--dpi N] [--force]\n"
    "             the lesson as a hand-out: lesson.pdf (one page per step) and PNG / SVG per step\n"
    "  export-figures FILE|sample|synthetic --out DIR [--format png,svg,pdf] [--size WxH] [--dpi N]\n"
    "             [--experiment EXP.json] [configuration flags]   render every view headless (see --help)\n"
    "  FILE is a path, or 'sample' (the embedded Qwen2.5-Coder-1.5B slice, head_dim 128) or 'sample:tiny'\n"
    "  info       FILE [--nonfinite refuse|zero] [--json]   summary of a KV dump (safetensors, npz, npy) or of a\n"
    "             tq-compressed/1 cache (loaded and verified)\n"
    "  compress   FILE --out OUT [--key-bits B] [--value-bits B] [--mode mse|prod|qjl] [--proj-dim M] [--layers LIST]\n"
    "             [--rotation haar|hadamard] [--seed S] [--keys-only] [--force]   save a tq-compressed/1 cache\n"
    "  evaluate   FILE [--key-bits LIST] [--value-bits LIST] [--proj-dim LIST] [--mode mse,prod,qjl]\n"
    "             [--layers LIST] [--heads LIST] [--queries dump|last-key|random] [--max-queries N]\n"
    "             [--rotation haar|hadamard] [--law exact|gaussian] [--seed S] [--backend auto|cpu|cuda]\n"
    "             [--sample-cells N] [--center none|causal[:W]|oracle] [--nonfinite refuse|zero] [--json|--csv]\n"
    "             fidelity metrics per (layer, head); --center: subtract the per-head key mean (causal: of the first W=128\n"
    "             tokens, kept exact; oracle: of the whole dump) before quantizing, charged to the key bytes\n"
    "             and summarised; --sample-cells N: only the first N (layer, kv head) cells of the seeded order\n"
    "             [--methods LIST] instead of --mode: tq-mse,tq-prod,tq-qjl,tq-ref11,tq-mse-nc,tq-mse-oc,kivi,int-rot,fp8-e4m3,\n"
    "             fp8-e5m2,fp16; [--outlier-channels K] (tq-mse-oc: K channels at b+1 bits, default d/2: 2.5 bits at b=2)\n"
    "             fp8/fp16 at their own width, the others at every --key-bits/--value-bits; [--norm-correction]\n"
    "             (tq-mse-nc for tq-mse) [--group G] [--window R] (KIVI, default 32 and 128); every method is charged\n"
    "             for every byte it stores (key/value B/vector per row); [--protect-layers N:BITS] (the first and\n"
    "             last N layers at BITS, every method with a width); [--qjl-orthogonal] (QJL stages with an\n"
    "             orthogonalised S: unit rows x sqrt(d), i.e. the sqrt(pi/(2d)) scale at m = d); [--recent-window N]\n"
    "             (the last N tokens' keys and values in fp16 for every method, charged 2d bytes each)\n"
    "  allocate   FILE --budget-bits B [--metric attention_cosine|top1|top5|kl|logit_cosine] [--method M] [--per-head]\n"
    "             [evaluate's data, query and method flags] [--json]   per-layer (per-head) key and value bits that maximise\n"
    "             the metric (keys) and the output error (values) under an average of B bits, greedy on the measured\n"
    "             curves; prints the plan, its measured metric and uniform B bits' for comparison\n"
    "any command: --memory-budget SIZE (default half of this machine's memory, or TQ_MEMORY_BUDGET)\n"
    "exit codes: 0 ok, 1 a check failed, 2 bad usage or input\n";

// Minimal option parser: --name value pairs and --flags.
class Args {
 public:
  static constexpr size_t kMaxListLength = 1 << 20;
  Args(const std::vector<std::string>& a, size_t from, std::vector<std::string> flags) : m_flags(std::move(flags)) {
    for (size_t i = from; i < a.size(); ++i) {
      const std::string& s = a[i];
      if (s.rfind("--", 0) != 0) {
        m_positional.push_back(s);
        continue;
      }
      const auto eq = s.find('=');
      std::string key = s.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      if (std::find(m_flags.begin(), m_flags.end(), key) != m_flags.end()) {
        // A flag takes no value; --json=true / =1 / =yes set it, =false / =0 / =no leave it unset, and
        // anything else is an error (--json=no was once taken as --json).
        const std::string v = eq == std::string::npos ? "1" : s.substr(eq + 1);
        if (v == "1" || v == "true" || v == "yes" || v == "on") m_values[key] = "1";
        else if (v == "0" || v == "false" || v == "no" || v == "off") m_values.erase(key);
        else throw UsageError("--" + key + " is a flag and takes no value (or true/false), got '" + v + "'");
      } else if (eq != std::string::npos) {
        m_values[key] = s.substr(eq + 1);
      } else {
        if (i + 1 >= a.size()) throw UsageError("option --" + key + " needs a value");
        m_values[key] = a[++i];
      }
    }
  }
  void allow(const std::vector<std::string>& names) const {
    for (const auto& [k, v] : m_values)
      if (std::find(names.begin(), names.end(), k) == names.end() && std::find(m_flags.begin(), m_flags.end(), k) == m_flags.end())
        throw UsageError("unknown option --" + k);
  }
  bool has(const std::string& k) const { return m_values.count(k) > 0; }
  bool flag(const std::string& k) const { return has(k); }
  std::string str(const std::string& k, const std::string& def) const { return has(k) ? m_values.at(k) : def; }
  long long integer(const std::string& k, long long def, long long lo, long long hi) const {
    if (!has(k)) return def;
    const std::string& s = m_values.at(k);
    size_t pos = 0;
    long long v = 0;
    try {
      v = std::stoll(s, &pos);
    } catch (const std::exception&) {
      throw UsageError("--" + k + " expects an integer, got '" + s + "'");
    }
    if (pos != s.size()) throw UsageError("--" + k + " expects an integer, got '" + s + "'");
    if (v < lo || v > hi) throw UsageError("--" + k + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + s);
    return v;
  }
  std::vector<int> intList(const std::string& k, std::vector<int> def, int lo, int hi) const {
    if (!has(k)) return def;
    std::vector<int> out;
    std::stringstream ss(m_values.at(k));
    std::string item;
    while (std::getline(ss, item, ',')) {
      const auto dash = item.find('-', 1);
      const std::string bounds = std::to_string(lo) + ".." + std::to_string(hi);
      auto number = [&](const std::string& t) {
        long long v = 0;
        size_t p = 0;
        try {
          v = std::stoll(t, &p);
        } catch (const std::exception&) {
          p = std::string::npos;
        }
        if (t.empty() || p != t.size())
          throw UsageError("--" + k + " expects a comma-separated list of integers (ranges like 1-4 allowed); '" + t + "' in '" + m_values.at(k) +
                           "' is not an integer");
        if (v < lo || v > hi) throw UsageError("--" + k + " values must be in " + bounds + ", got " + t);
        return static_cast<int>(v);
      };
      if (dash != std::string::npos) {
        // Both ends are checked against the bounds before the range is expanded.
        const int a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
        if (b < a) throw UsageError("--" + k + " has the descending range '" + item + "'");
        if (out.size() + static_cast<size_t>(b - a) + 1 > kMaxListLength)
          throw UsageError("--" + k + " lists more than " + std::to_string(kMaxListLength) + " values");
        for (long long v = a; v <= b; ++v) out.push_back(static_cast<int>(v));
      } else {
        out.push_back(number(item));
      }
      if (out.size() > kMaxListLength) throw UsageError("--" + k + " lists more than " + std::to_string(kMaxListLength) + " values");
    }
    if (out.empty()) throw UsageError("--" + k + " is empty");
    return out;
  }
  const std::vector<std::string>& positional() const { return m_positional; }

 private:
  std::vector<std::string> m_flags;
  std::map<std::string, std::string> m_values;
  std::vector<std::string> m_positional;
};

template <class F>
auto parseOr(const std::string& what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw UsageError(what + ": " + e.what());
  }
}

// ------------------------------------------------------------------ validate
int cmdValidate(const Args& a, std::ostream& out) {
  a.allow({"dim", "bits", "vectors", "seed", "rotation", "json"});
  ValidateConfig c;
  c.dim = static_cast<int>(a.integer("dim", 128, 2, 1024));
  c.bits = a.intList("bits", {1, 2, 3, 4}, 1, 8);
  c.vectors = static_cast<size_t>(a.integer("vectors", 100000, 100, 10000000));
  c.seed = static_cast<uint64_t>(a.integer("seed", 42, 0, (1LL << 62)));
  c.rotation = parseOr("--rotation", [&] { return parseRotation(a.str("rotation", "haar")); });
  // Unit vectors, their reconstruction and codes are held at once: about three float copies.
  checkMemory(3.0 * 4.0 * static_cast<double>(c.vectors) * c.dim,
              "validate --vectors " + std::to_string(c.vectors) + " --dim " + std::to_string(c.dim));
  std::vector<std::string> failures;
  const json j = validateEngine(c, &failures);  // the numbers: core/validation/validate
  const bool ok = failures.empty();
  const int d = c.dim;
  const size_t n = c.vectors;
  const uint64_t seed = c.seed;
  const RotationKind rot = c.rotation;
  const json& mse = j["mse"];
  const json& ip = j["inner_products"];
  const json& needle = j["needle"];
  const json& kv = j["kv_cache"];
  const int trials = needle.empty() ? 0 : needle[0]["trials"].get<int>();
  if (a.flag("json")) {
    out << j.dump(2) << "\n";
  } else {
    out << "TurboQuant validate: d=" << d << ", " << n << " unit vectors, " << rotationName(rot) << " rotation, seed " << seed << "\n";
    out << "MSE per bit-width (measured / theory / paper bounds):\n";
    for (const auto& r : mse)
      out << "  b=" << r["bits"] << "  " << std::setprecision(5) << r["measured"].get<double>() << " / " << r["theory"].get<double>() << "  ["
          << r["lower_bound"].get<double>() << ", " << r["upper_bound"].get<double>() << "]\n";
    out << "Inner products on correlated pairs, 8 quantizer draws (slope vs expected; bias; error variance; noise variance around the fit vs theory):\n";
    for (const auto& r : ip)
      out << "  " << std::setw(4) << r["mode"].get<std::string>() << " b=" << r["bits"] << "  slope " << std::setprecision(4) << r["slope"].get<double>()
          << " (expect " << r["expected_slope"].get<double>() << ")  bias " << r["bias"].get<double>() << "  error var " << r["variance"].get<double>()
          << "  noise var " << r["noise_variance"].get<double>() << " (theory " << r["predicted_noise_variance"].get<double>() << ")\n";
    out << "Needle retrieval (top-1 hits of " << trials << "):";
    for (const auto& r : needle) out << " " << r["mode"].get<std::string>() << r["bits"].get<int>() << "=" << r["hits"].get<int>();
    out << "\nKV cache (prod keys + mse values, bytes held = formula):";
    for (const auto& r : kv) out << " b" << r["key_bits"].get<int>() << " " << std::setprecision(3) << r["compression_ratio"].get<double>() << "x";
    out << "\n" << (ok ? "all checks passed" : "CHECKS FAILED:") << "\n";
    for (const auto& f : failures) out << "  - " << f << "\n";
  }
  return ok ? 0 : 1;
}

// ------------------------------------------------------------------ crosscheck
int cmdCrosscheck(const Args& a, std::ostream& out) {
  a.allow({"reference", "json"});
  if (!a.has("reference")) throw UsageError("crosscheck needs --reference FILE");
  const CrossCheckReport rep = crossCheckReference(a.str("reference", ""));
  json j;
  j["command"] = "crosscheck";
  j["file"] = rep.file;
  json groups = json::array();
  for (const auto& g : rep.groups) {
    json items = json::array();
    for (const auto& it : g.items)
      items.push_back({{"what", it.what}, {"compared", it.compared}, {"mismatches", it.mismatches}, {"ties", it.ties}, {"max_error", it.maxError},
                       {"tolerance", it.tolerance}, {"informational", it.informational}, {"pass", it.pass()}, {"note", it.note}});
    groups.push_back({{"group", g.name}, {"dim", g.dim}, {"bits", g.bits}, {"pass", g.pass()}, {"checks", items}});
  }
  j["groups"] = groups;
  j["ok"] = rep.pass();
  if (a.flag("json")) {
    out << j.dump(2) << "\n";
  } else {
    out << "Cross-check against " << rep.file << "\n";
    for (const auto& g : rep.groups) {
      size_t compared = 0, mism = 0, ties = 0;
      for (const auto& it : g.items)
        if (!it.informational) {
          compared += it.compared;
          mism += it.mismatches;
          ties += it.ties;
        }
      out << "  " << std::left << std::setw(20) << g.name << std::right << (g.pass() ? " agree " : " DISAGREE ") << compared << " values, " << mism
          << " mismatches, " << ties << " ties\n";
      for (const auto& it : g.items)
        if (!it.pass() || it.informational)
          out << "      " << it.what << ": max error " << it.maxError << (it.informational ? " (informational)" : " FAIL") << "\n";
    }
    out << (rep.pass() ? "all groups agree" : "DISAGREEMENT") << "\n";
  }
  return rep.pass() ? 0 : 1;
}

// ------------------------------------------------------------------ bench
template <class F>
double medianSeconds(int repeat, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

json recordJson(const BenchRecord& r) {
  json j = {{"operation", r.operation}, {"backend", r.backend},   {"device", r.device}, {"dim", r.dim},
            {"bits", r.bits},           {"proj_dim", r.projDim},  {"rotation", r.rotation}, {"vectors", r.vectors},
            {"seconds", r.seconds},     {"vectors_per_second", r.vectorsPerSecond}, {"bytes_moved", r.bytesMoved},
            {"gb_per_second", r.gbPerSecond}, {"repetitions", r.repetitions}};
  if (r.percentOfPeak >= 0) j["percent_of_peak"] = r.percentOfPeak;
  if (!r.note.empty()) j["note"] = r.note;
  return j;
}

std::vector<BenchRecord> cpuBench(int d, int bits, int m, RotationKind rot, size_t n, int repeat) {
  auto backend = makeCpuBackend();
  const std::string dev = backend->device();
  std::vector<BenchRecord> recs;
  auto add = [&](const std::string& op, const std::string& rotName, double secs, double bytes, const std::string& note) {
    BenchRecord r;
    r.operation = op;
    r.backend = "cpu";
    r.device = dev;
    r.dim = d;
    r.bits = bits;
    r.projDim = op == "compress_keys_prod" || op == "score_keys" ? m : 0;
    r.rotation = rotName;
    r.vectors = n;
    r.seconds = secs;
    r.vectorsPerSecond = n / secs;
    r.bytesMoved = bytes;
    r.gbPerSecond = bytes / secs / 1e9;
    r.repetitions = repeat;
    r.note = note;
    recs.push_back(r);
  };
  // Non-unit vectors like real keys.
  std::vector<float> X(n * static_cast<size_t>(d));
  parallelRanges(n, 4096, [&](size_t b, size_t e) {
    for (size_t i = b * d; i < e * d; ++i) X[i] = static_cast<float>(standardNormal(7, kStreamValidate, i));
  });
  QuantConfig kc;
  kc.dim = d;
  kc.bits = bits;
  kc.mode = KeyMode::Prod;
  kc.projDim = m;
  kc.rotation = rot;
  Quantizer kq(kc);
  QuantConfig vc = kc;
  vc.mode = KeyMode::Mse;
  vc.projDim = 0;
  Quantizer vq(vc);
  const double in = 4.0 * d * n;
  const std::string threads = std::to_string(cpuThreads()) + " threads";
  CompressedVectors keys;
  double s = medianSeconds(repeat, [&] {
    keys.clear();
    kq.compress(X.data(), n, keys);
  });
  add("compress_keys_prod", rotationName(rot), s, in + keys.bytes(), threads + "; fp32 in, packed out");
  CompressedVectors vals;
  s = medianSeconds(repeat, [&] {
    vals.clear();
    vq.compress(X.data(), n, vals);
  });
  add("compress_values_mse", rotationName(rot), s, in + vals.bytes(), threads);
  std::vector<float> q(X.begin(), X.begin() + d), out(n);
  s = medianSeconds(repeat * 4, [&] { kq.scoresMany(q.data(), 1, keys, out.data()); });
  add("score_keys", rotationName(rot), s, static_cast<double>(keys.bytes()), threads + "; one query against all keys, includes the query's look-up tables");
  std::vector<float> rec(X.size());
  s = medianSeconds(repeat, [&] { backend->decompress(vq, vals, rec.data()); });
  add("decompress_values", rotationName(rot), s, vals.bytes() + in, threads);
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> K(X.data(), static_cast<Eigen::Index>(n), d);
  Eigen::Map<const Eigen::VectorXf> qq(q.data(), d);
  Eigen::VectorXf o(static_cast<Eigen::Index>(n));
  s = medianSeconds(repeat * 4, [&] { o.noalias() = K * qq; });
  add("baseline_fp32_gemv", "-", s, in, "Eigen fp32 K q on the same keys, 1 thread (Eigen threading off)");
  return recs;
}

int cmdBench(const Args& a, std::ostream& out) {
  a.allow({"backend", "dim", "bits", "proj-dim", "rotation", "vectors", "repeat", "json"});
  const std::string backend = a.str("backend", "cpu");
  const int d = static_cast<int>(a.integer("dim", 128, 2, 1024));
  const int bits = static_cast<int>(a.integer("bits", 3, 1, 8));
  const int m = static_cast<int>(a.integer("proj-dim", d, 1, 16384));
  const RotationKind rot = parseOr("--rotation", [&] { return parseRotation(a.str("rotation", "hadamard")); });
  const size_t n = static_cast<size_t>(a.integer("vectors", 262144, 1, 1LL << 28));
  const int repeat = static_cast<int>(a.integer("repeat", 5, 1, 1000));
  // Inputs, reconstruction and both compressed sets are held at once: about three float copies.
  checkMemory(3.0 * 4.0 * static_cast<double>(n) * d, "bench --vectors " + std::to_string(n) + " --dim " + std::to_string(d));
  std::vector<BenchRecord> recs;
  if (backend == "cpu") {
    recs = cpuBench(d, bits, m, rot, n, repeat);
  } else if (backend == "cuda") {
#ifdef TQ_HAVE_CUDA
    const CudaDeviceInfo info = cudaProbe();
    if (!info.available) {
      throw std::runtime_error("CUDA backend requested but no usable device: " + info.error);
    }
    CudaBenchOptions o;
    o.dim = d;
    o.bits = bits;
    o.projDim = m;
    o.hadamard = rot == RotationKind::Hadamard;
    o.vectors = n;
    o.repetitions = std::max(repeat, 20);
    o.tokens = {32768};  // the 1M-token scoring and the full sweep run in bench/ (tq_cuda_bench)
    o.sweep = false;
    recs = cudaBenchmark(o);
#else
    throw UsageError("this build has no CUDA backend (nvcc was not found at build time)");
#endif
  } else {
    throw UsageError("--backend must be cpu or cuda, got '" + backend + "'");
  }
  json arr = json::array();
  for (const auto& r : recs) arr.push_back(recordJson(r));
  if (a.flag("json")) {
    out << json({{"command", "bench"}, {"records", arr}}).dump(2) << "\n";
  } else {
    for (const auto& r : recs)
      out << std::left << std::setw(22) << r.operation << std::right << std::setw(12) << std::setprecision(4) << r.vectorsPerSecond / 1e6 << " M vec/s  "
          << std::setw(8) << r.gbPerSecond << " GB/s  (" << r.backend << ", " << r.device << ")\n";
  }
  return 0;
}

// ------------------------------------------------------------------ memory
int cmdMemory(const Args& a, std::ostream& out) {
  a.allow({"model", "layers", "kv-heads", "head-dim", "tokens", "key-bits", "value-bits", "mode", "proj-dim", "recent-window", "json"});
  MemoryConfig c;
  std::string model = "custom";
  if (a.has("model")) {
    const ModelPreset& p = parseOr("--model", [&]() -> const ModelPreset& { return findPreset(a.str("model", "")); });
    c.layers = p.layers;
    c.kvHeads = p.kvHeads;
    c.headDim = p.headDim;
    model = p.name;
  } else if (!a.has("layers") || !a.has("kv-heads") || !a.has("head-dim")) {
    throw UsageError("memory needs --model PRESET or all of --layers, --kv-heads and --head-dim");
  }
  c.layers = static_cast<int>(a.integer("layers", c.layers, 1, 10000));
  c.kvHeads = static_cast<int>(a.integer("kv-heads", c.kvHeads, 1, 10000));
  c.headDim = static_cast<int>(a.integer("head-dim", c.headDim, 2, 4096));
  c.tokens = a.integer("tokens", 32768, 0, 1LL << 40);
  c.keyBits = static_cast<int>(a.integer("key-bits", 3, 1, 8));
  c.valueBits = static_cast<int>(a.integer("value-bits", 3, 1, 8));
  c.keyMode = parseOr("--mode", [&] { return parseKeyMode(a.str("mode", "prod")); });
  c.projDim = static_cast<int>(a.integer("proj-dim", 0, 0, 16384));
  c.recentTokens = a.integer("recent-window", 0, 0, 1LL << 40);
  const MemoryReport r = memoryModel(c);
  json j = {{"command", "memory"},
            {"model", model},
            {"layers", c.layers},
            {"kv_heads", c.kvHeads},
            {"head_dim", c.headDim},
            {"tokens", c.tokens},
            {"key_bits", c.keyBits},
            {"value_bits", c.valueBits},
            {"key_mode", keyModeName(c.keyMode)},
            {"proj_dim", c.keyMode == KeyMode::Mse ? 0 : (c.projDim > 0 ? c.projDim : c.headDim)},
            {"recent_window", c.recentTokens},
            {"key_bytes_per_vector", r.keyBytesPerVector},
            {"key_bytes_charged", r.keyBytesCharged},
            {"value_bytes_charged", r.valueBytesCharged},
            {"value_bytes_per_vector", r.valueBytesPerVector},
            {"key_bits_per_coordinate", r.keyBitsPerCoordinate},
            {"value_bits_per_coordinate", r.valueBitsPerCoordinate},
            {"bytes_per_token", r.bytesPerToken},
            {"total_bytes", r.totalBytes},
            {"fp16_bytes", r.fp16Bytes},
            {"fp8_bytes", r.fp8Bytes},
            {"ratio_vs_fp16", r.ratioVsFp16},
            {"ratio_vs_fp8", r.ratioVsFp8}};
  if (a.flag("json")) {
    out << j.dump(2) << "\n";
  } else {
    out << model << ": " << c.layers << " layers x " << c.kvHeads << " kv heads x d=" << c.headDim << ", " << c.tokens << " tokens\n";
    out << "  keys   " << c.keyBits << "-bit " << keyModeName(c.keyMode) << ": " << r.keyBytesPerVector << " B/vector (" << std::setprecision(4)
        << r.keyBitsPerCoordinate << " bits/coord)\n";
    out << "  values " << c.valueBits << "-bit mse: " << r.valueBytesPerVector << " B/vector (" << r.valueBitsPerCoordinate << " bits/coord)\n";
    out << "  KV cache " << r.totalBytes / (1 << 20) << " MiB vs fp16 " << r.fp16Bytes / (1 << 20) << " MiB: " << r.ratioVsFp16 << "x (vs fp8 "
        << r.ratioVsFp8 << "x)\n";
  }
  return 0;
}

int cmdPresets(const Args& a, std::ostream& out) {
  a.allow({"json"});
  json arr = json::array();
  for (const auto& p : modelPresets())
    arr.push_back({{"id", p.id}, {"name", p.name}, {"layers", p.layers}, {"q_heads", p.qHeads}, {"kv_heads", p.kvHeads}, {"head_dim", p.headDim}, {"note", p.note}});
  if (a.flag("json")) out << arr.dump(2) << "\n";
  else
    for (const auto& p : modelPresets())
      out << std::left << std::setw(16) << p.id << p.name << ": " << p.layers << " layers, " << p.qHeads << "q/" << p.kvHeads << "kv heads, d=" << p.headDim << "\n";
  return 0;
}


// ------------------------------------------------------------------ info / evaluate
LoadOptions loadOptions(const Args& a) {
  LoadOptions o;
  const std::string nf = a.str("nonfinite", "refuse");
  if (nf == "zero") o.nonFinite = NonFinitePolicy::Zero;
  else if (nf != "refuse") throw UsageError("--nonfinite must be refuse or zero, got '" + nf + "'");
  return o;
}

std::string onlyFile(const Args& a, const std::string& cmd) {
  if (a.positional().size() != 1) throw UsageError(cmd + " needs exactly one FILE argument");
  return a.positional()[0];
}

json configJson(const QuantConfig& c) {
  return {{"dim", c.dim}, {"bits", c.bits}, {"mode", keyModeName(c.mode)}, {"proj_dim", c.projDim}, {"rotation", rotationName(c.rotation)}, {"seed", c.seed}};
}

/// info on a tq-compressed/1 file: loading it rebuilds every quantizer and verifies codebooks, rotation and
/// QJL fingerprints and every buffer's size; any mismatch is a DataError naming the file.
int infoCompressed(const std::string& path, const Args& a, std::ostream& out) {
  const LoadedCompressedCache ld = loadCompressed(path);
  const CompressedCache& c = ld.cache;
  const CompressedSummary sum = summarizeCompressed(c);
  json layers = json::array();
  for (const auto& l : c.layers) {
    json e = {{"source_layer", l.sourceLayer}, {"kv_heads", l.keys.size()}, {"keys", configJson(l.keyConfig)}};
    e["key_bytes_per_vector"] = l.keys.empty() ? 0 : l.keys[0].bytesPerVector();
    if (!l.values.empty()) {
      e["values"] = configJson(l.valueConfig);
      e["value_bytes_per_vector"] = l.values[0].bytesPerVector();
    }
    layers.push_back(e);
  }
  json md = json::object();
  for (const auto& [k, v] : c.metadata) md[k] = v.size() > 200 ? v.substr(0, 200) + "..." : v;
  const json j = {{"command", "info"}, {"file", path}, {"container", "tq-compressed/1"}, {"layers", sum.layers}, {"kv_heads", sum.kvHeads},
                  {"seq_len", sum.tokens}, {"bytes", sum.bytes}, {"verified", true}, {"per_layer", layers}, {"metadata", md}};
  if (a.flag("json")) out << j.dump(2) << "\n";
  else out << path << "\n" << sum.describe();
  return 0;
}

int cmdInfo(const Args& a, std::ostream& out) {
  a.allow({"nonfinite", "json"});
  if (isCompressedCacheFile(onlyFile(a, "info"))) return infoCompressed(onlyFile(a, "info"), a, out);
  const auto dump = openDumpArgument(onlyFile(a, "info"), loadOptions(a));
  const KvDumpSummary& s = dump->summary();
  json md = json::object();
  for (const auto& [k, v] : s.metadata) md[k] = k == "token_strings" && v.size() > 200 ? v.substr(0, 200) + "..." : v;
  json nft = json::array();
  for (const auto& [t, c] : s.nonfiniteTensors) nft.push_back({{"tensor", t}, {"count", c}});
  json j = {{"command", "info"},
            {"file", dump->path()},
            {"container", containerName(s.container)},
            {"layout", s.layout},
            {"layers", s.layers},
            {"q_heads", s.qHeads},
            {"kv_heads", s.kvHeads},
            {"seq_len", s.seq},
            {"head_dim", s.headDim},
            {"head_dim_v", s.headDimV},
            {"dtype", dtypeName(s.dtype)},
            {"has_queries", s.hasQueries},
            {"has_values", s.hasValues},
            {"has_tokens", s.hasTokens},
            {"nonfinite_count", s.nonfiniteCount},
            {"nonfinite_tensors", nft},
            {"softmax_scale", dump->softmaxScale()},
            {"model", dump->modelName()},
            {"file_bytes", s.fileBytes},
            {"tensor_bytes", s.tensorBytes},
            {"warnings", s.warnings},
            {"metadata", md}};
  SampleId sid;
  if (parseSampleArgument(onlyFile(a, "info"), &sid)) {
    j["embedded_sample"] = sampleInfo(sid).key;
    j["sample_file"] = sampleInfo(sid).fileName;
  }
  if (a.flag("json")) {
    out << j.dump(2) << "\n";
  } else {
    out << dump->path() << "\n  " << s.describe() << "\n  model: " << (dump->modelName().empty() ? "-" : dump->modelName())
        << "\n  queries: " << (s.hasQueries ? "yes (real)" : "no (use a proxy query source)") << "\n  NaN/Inf: " << s.nonfiniteCount << "\n";
    for (const auto& w : s.warnings) out << "  warning: " << w << "\n";
  }
  return 0;
}

int cmdCompress(const Args& a, std::ostream& out) {
  a.allow({"out", "key-bits", "value-bits", "mode", "proj-dim", "rotation", "seed", "layers", "keys-only", "force", "nonfinite", "json"});
  if (!a.has("out")) throw UsageError("compress needs --out FILE (a tq-compressed/1 safetensors file)");
  const std::string outPath = a.str("out", "");
  const std::string in = onlyFile(a, "compress");
  const auto dump = openDumpArgument(in, loadOptions(a));
  if (!a.flag("force") && std::filesystem::exists(outPath))
    throw UsageError("--out " + outPath + " exists; pass --force to replace it");
  QuantConfig kc;
  kc.dim = dump->summary().headDim;
  kc.bits = static_cast<int>(a.integer("key-bits", 3, 1, 8));
  kc.mode = parseOr("--mode", [&] { return parseKeyMode(a.str("mode", "prod")); });
  kc.projDim = static_cast<int>(a.integer("proj-dim", 0, 0, 16384));
  kc.rotation = parseOr("--rotation", [&] { return parseRotation(a.str("rotation", "haar")); });
  kc.seed = static_cast<uint64_t>(a.integer("seed", 42, 0, (1LL << 62)));
  QuantConfig vc = kc;
  vc.dim = dump->summary().hasValues ? dump->summary().headDimV : kc.dim;
  vc.bits = static_cast<int>(a.integer("value-bits", 3, 1, 8));
  vc.mode = KeyMode::Mse;
  vc.projDim = 0;
  const std::vector<int> layers = a.has("layers") ? a.intList("layers", {}, 0, dump->summary().layers - 1) : std::vector<int>{};
  const bool withValues = dump->summary().hasValues && !a.flag("keys-only");
  const CompressedCache cache = parseOr("compress", [&] { return compressCache(*dump, kc, vc, withValues, layers); });
  saveCompressed(outPath, cache);
  if (a.flag("json"))
    out << json({{"command", "compress"}, {"file", in}, {"out", outPath}, {"layers", cache.layers.size()}, {"bytes", cache.bytes()}}).dump(2) << "\n";
  else
    out << "wrote " << outPath << ": " << cache.layers.size() << " layers, " << cache.bytes() << " bytes of codes, signs and norms\n";
  return 0;
}

std::vector<KeyMode> modeList(const std::string& s) {
  std::vector<KeyMode> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(parseOr("--mode", [&] { return parseKeyMode(item); }));
  if (out.empty()) throw UsageError("--mode is empty");
  return out;
}

json metricsJson(const AttentionMetrics& m) {
  return {{"attention_cosine", m.attentionCosine}, {"top1", m.top1}, {"top5", m.top5}, {"kl", m.kl}, {"logit_cosine", m.logitCosine},
          {"output_error", m.outputError}, {"bias", m.bias}, {"variance", m.variance}, {"slope", m.slope}};
}

/// The flags evaluate and allocate share (the grid's data selection, quantizer, centering and method
/// options), in one place.
void applySweepFlags(const Args& a, const KvDump& dump, SweepConfig& c) {
  if (a.has("layers")) c.layers = a.intList("layers", {}, 0, 1 << 20);
  c.queries = parseOr("--queries", [&] { return parseQuerySource(a.str("queries", dump.summary().hasQueries ? "dump" : "last-key")); });
  c.maxQueries = static_cast<int>(a.integer("max-queries", 32, 1, 100000));
  c.rotation = parseOr("--rotation", [&] { return parseRotation(a.str("rotation", "haar")); });
  c.law = parseOr("--law", [&] { return parseLaw(a.str("law", "exact")); });
  c.seed = static_cast<uint64_t>(a.integer("seed", 42, 0, (1LL << 62)));
  c.sampleCells = static_cast<size_t>(a.integer("sample-cells", 0, 0, 100000000));
  c.centering = parseOr("--center", [&] { return parseKeyCentering(a.str("center", "none"), &c.centerWindow); });
  c.methodOptions.group = static_cast<int>(a.integer("group", 32, 1, 65536));
  c.methodOptions.window = static_cast<int>(a.integer("window", 128, 0, 1 << 24));
  c.methodOptions.outlierChannels = static_cast<int>(a.integer("outlier-channels", 0, 0, kMaxHeadDimension));
  c.recentWindow = static_cast<int>(a.integer("recent-window", 0, 0, 1 << 24));
  c.orthogonalQjl = a.flag("qjl-orthogonal");
}

int cmdEvaluate(const Args& a, std::ostream& out, std::ostream& err) {
  a.allow({"key-bits", "value-bits", "proj-dim", "mode", "layers", "heads", "queries", "max-queries", "rotation", "law", "seed", "backend",
           "nonfinite", "json", "csv", "reference-one-bit", "sample-cells", "center", "methods", "norm-correction", "group", "window", "outlier-channels", "protect-layers", "qjl-orthogonal",
           "recent-window"});
  if (a.has("methods") && a.has("mode")) throw UsageError("choose one of --methods and --mode (TurboQuant's modes are tq-mse, tq-prod, tq-qjl in --methods)");
  if (a.flag("json") && a.flag("csv")) throw UsageError("choose one of --json and --csv");
  using Clock = std::chrono::steady_clock;
  const auto tStart = Clock::now();
  auto secs = [](Clock::time_point from) { return std::chrono::duration<double>(Clock::now() - from).count(); };
  // The backend starts (CUDA: driver, context, cuBLAS) while the dump is opened and scanned.
  const BackendChoice choice = parseOr("--backend", [&] { return parseBackendChoice(a.str("backend", "auto")); });
  std::string note;
  double initSeconds = 0;
  auto backendReady = std::async(std::launch::async, [&] {
    const auto t = Clock::now();
    auto b = chooseBackend(choice, &note);
    initSeconds = secs(t);
    return b;
  });
  const auto dump = openDumpArgument(onlyFile(a, "evaluate"), loadOptions(a));
  const double openSeconds = secs(tStart);
  SweepConfig c;
  c.keyBits = a.intList("key-bits", {1, 2, 3, 4}, 1, 8);
  c.valueBits = a.intList("value-bits", {4}, 1, 8);
  c.projDims = a.intList("proj-dim", {0}, 0, 16384);
  if (a.has("methods")) {
    parseOr("--methods", [&] {
      parseMethodList(a.str("methods", ""), c.modes, c.methods);
      return 0;
    });
  } else {
    c.modes = modeList(a.str("mode", "mse,prod"));
  }
  // --norm-correction: TurboQuant-MSE's reconstructions rescaled to the stored norm (tq-mse-nc instead of tq-mse)
  if (a.flag("norm-correction")) {
    const auto it = std::find(c.modes.begin(), c.modes.end(), KeyMode::Mse);
    if (it == c.modes.end()) throw UsageError("--norm-correction applies to tq-mse, which is not among the methods");
    c.modes.erase(it);
    if (std::find(c.methods.begin(), c.methods.end(), Method::TqMseNormCorrected) == c.methods.end()) c.methods.insert(c.methods.begin(), Method::TqMseNormCorrected);
  }
  applySweepFlags(a, *dump, c);
  if (a.has("protect-layers"))
    parseOr("--protect-layers", [&] {
      parseProtectLayers(a.str("protect-layers", "none"), &c.protectLayers, &c.protectBits);
      return 0;
    });
  // --outlier-channels K: tq-mse-oc (K channels at b+1 bits; K = d/2 at b = 2 is 2.5 bits)
  if (a.has("outlier-channels")) {
    if (c.methodOptions.outlierChannels < 1) throw UsageError("--outlier-channels expects K >= 1");
    if (std::find(c.methods.begin(), c.methods.end(), Method::TqMseOutliers) == c.methods.end()) c.methods.push_back(Method::TqMseOutliers);
  }
  if (a.has("heads")) c.qHeads = a.intList("heads", {}, 0, 1 << 20);
  c.referenceOneBit = a.flag("reference-one-bit");
  auto backend = backendReady.get();
  if (!note.empty() && choice == BackendChoice::Cuda) err << "tqstudio-cli evaluate: " << note << "; running on the CPU\n";
  // Progress on stderr for long runs (a terminal only, at most once a second, after the first 2 s);
  // Ctrl-C ends the process (the default SIGINT action), so nothing here blocks it.
  const bool tty = ::isatty(2) == 1;
  auto lastPrint = Clock::now();
  bool printed = false;
  const ProgressFn progress = [&](size_t done, size_t total) {
    if (!tty || secs(tStart) < 2.0 || std::chrono::duration<double>(Clock::now() - lastPrint).count() < 1.0) return true;
    lastPrint = Clock::now();
    printed = true;
    err << "\revaluate: " << done << " of " << total << " cells, " << static_cast<int>(secs(tStart)) << " s" << std::flush;
    return true;
  };
  const SweepResult r = parseOr(dump->path(), [&] { return runSweep(*dump, c, *backend, progress); });
  if (printed) err << "\n";
  const auto tOut = Clock::now();
  struct ProfileLine {  // TQ_SWEEP_PROFILE=1: where the command's time went, once the output is written
    bool on;
    std::ostream& err;
    double init, open, sweep;
    Clock::time_point tOut, tStart;
    ~ProfileLine() {
      if (on)
        err << "evaluate profile: backend start " << init << " s (concurrent with opening the dump " << open << " s), sweep " << sweep
            << " s, output " << std::chrono::duration<double>(Clock::now() - tOut).count() << " s, total "
            << std::chrono::duration<double>(Clock::now() - tStart).count() << " s\n";
    }
  } profileLine{std::getenv("TQ_SWEEP_PROFILE") != nullptr, err, initSeconds, openSeconds, r.seconds, tOut, tStart};
  // A metric that is not finite is never printed as a result without saying so (and the exit code says it).
  size_t nonFinite = 0;
  for (const auto& row : r.rows)
    for (double v : {row.m.attentionCosine, row.m.top1, row.m.top5, row.m.kl, row.m.logitCosine, row.m.outputError})
      nonFinite += !std::isfinite(v);
  struct NonFiniteNote {
    size_t n;
    std::ostream& err;
    ~NonFiniteNote() {
      if (n)
        err << "tqstudio-cli evaluate: " << n << " metric values are not finite (NaN or infinity); the rows that hold them are not "
            << "meaningful (exit code 1)\n";
    }
  } nonFiniteNote{nonFinite, err};
  const int status = nonFinite ? 1 : 0;
  if (a.flag("csv")) {
    writeCsv(r, out);
    return status;
  }
  json summary = json::array(), perHead = json::array();
  for (const auto& s : r.summary()) {
    json e = {{"method", s.key.methodName()}, {"method_options", methodOptionsLabel(s.key.method, c.methodOptions)}, {"key_bits", s.key.bits},
              {"value_bits", s.valueBits}, {"proj_dim", s.key.projDim}, {"mode", keyModeName(s.key.mode)}};
    e.update(metricsJson(s.mean));
    e["worst"] = metricsJson(s.worst);
    e["key_bytes_per_vector"] = s.keyBytesPerVector;
    e["value_bytes_per_vector"] = s.valueBytesPerVector;
    e["key_bits_per_coordinate"] = 8.0 * s.keyBytesPerVector / r.headDim;
    e["bytes_per_token_per_head"] = s.keyBytesPerVector + s.valueBytesPerVector;
    e["heads"] = s.rows;
    summary.push_back(e);
  }
  for (const auto& row : r.rows) {
    json e = {{"method", row.key.methodName()}, {"method_options", methodOptionsLabel(row.key.method, c.methodOptions)}, {"key_bits", row.key.bits},
              {"value_bits", row.valueBits}, {"proj_dim", row.key.projDim}, {"mode", keyModeName(row.key.mode)},
              {"layer", row.layer}, {"head", row.qHead}, {"kv_head", row.kvHead}};
    e.update(metricsJson(row.m));
    e["key_vector_mse"] = row.keyVectorMse;
    e["value_vector_mse"] = row.valueVectorMse;
    e["key_bytes_per_vector"] = row.keyBytesPerVector;
    e["value_bytes_per_vector"] = row.valueBytesPerVector;
    e["key_bits_per_coordinate"] = 8.0 * row.keyBytesPerVector / r.headDim;
    perHead.push_back(e);
  }
  json j = {{"command", "evaluate"}, {"file", dump->path()}, {"model", dump->modelName()}, {"queries", r.queryLabel},
            {"backend", r.backend}, {"device", r.device}, {"backend_note", note}, {"head_dim", r.headDim}, {"tokens", r.tokens},
            {"rotation", rotationName(c.rotation)}, {"law", lawName(c.law)}, {"seed", c.seed}, {"key_centering", centeringLabel(c)},
            {"protect_layers", protectLayersLabel(c)}, {"recent_window", c.recentWindow}, {"qjl_matrix", c.orthogonalQjl ? "orthogonal" : "gaussian"},
            {"seconds", r.seconds},
            {"cells_done", r.cellsDone}, {"cells_total", r.cellsTotal}, {"cells_in_grid", r.cellsInGrid}, {"cpu_fallback_cells", r.cpuFallbackCells},
            {"summary", summary}, {"per_head", perHead}};
  if (a.flag("json")) {
    out << j.dump(2) << "\n";
    return status;
  }
  out << dump->path() << ": " << dump->summary().describe() << "\n" << r.queryLabel << " · " << r.backend << " (" << r.device << ")"
      << (note.empty() ? "" : " · " + note) << " · " << std::setprecision(3) << r.seconds << " s";
  if (r.cellsTotal < r.cellsInGrid) out << " · a seeded sample of " << r.cellsTotal << " of " << r.cellsInGrid << " (layer, kv head) cells";
  if (r.cpuFallbackCells) out << " · " << r.cpuFallbackCells << " cells evaluated on the CPU (the device declined them)";
  out << "\n";
  if (c.protectLayers > 0)
    out << "protected layers: the first and last " << c.protectLayers << " at " << c.protectBits
        << " bits for every method with a width (rows keep their nominal widths; B/vec is what was stored)\n";
  if (std::find(c.methods.begin(), c.methods.end(), Method::Kivi) != c.methods.end())
    out << "kivi: groups of " << c.methodOptions.group << ", the last " << c.methodOptions.window << " tokens (and any part group) in fp16, charged\n";
  if (c.recentWindow > 0)
    out << "recent window: the last " << c.recentWindow << " tokens' keys and values in fp16 for every method, charged 2d bytes each\n";
  if (c.centering != KeyCentering::None)
    out << "keys centred (" << centeringLabel(c) << (c.centering == KeyCentering::Oracle ? ", the whole dump's mean: not causal" : "")
        << "); the mean and any exact window are charged to key B/vec\n";
  out << "   method  K  V    m   attn-cos   top1   top5        KL  logit-cos  out-err  key B/vec   (mean over "
      << (summary.empty() ? 0 : summary[0]["heads"].get<int>()) << " heads; worst attn-cos)\n";
  for (const auto& e : summary) {
    out << std::setw(9) << e["method"].get<std::string>() << std::setw(3) << e["key_bits"].get<int>() << std::setw(3) << e["value_bits"].get<int>()
        << std::setw(5) << e["proj_dim"].get<int>() << std::fixed << std::setprecision(4) << std::setw(11) << e["attention_cosine"].get<double>()
        << std::setw(7) << std::setprecision(3) << e["top1"].get<double>() << std::setw(7) << e["top5"].get<double>() << std::scientific
        << std::setprecision(2) << std::setw(10) << e["kl"].get<double>() << std::fixed << std::setprecision(4) << std::setw(11)
        << e["logit_cosine"].get<double>() << std::setw(9) << e["output_error"].get<double>() << std::setprecision(2) << std::setw(11)
        << e["key_bytes_per_vector"].get<double>() << std::setprecision(4) << "   (" << e["worst"]["attention_cosine"].get<double>() << ")\n";
    out.unsetf(std::ios::floatfield);
  }
  return status;
}

// ------------------------------------------------------------------ allocate
int cmdAllocate(const Args& a, std::ostream& out, std::ostream& err) {
  a.allow({"budget-bits", "metric", "method", "proj-dim", "per-head", "layers", "queries", "max-queries", "rotation", "law", "seed", "backend",
           "nonfinite", "json", "sample-cells", "center", "group", "window", "outlier-channels", "recent-window", "qjl-orthogonal"});
  if (!a.has("budget-bits")) throw UsageError("allocate needs --budget-bits B (the average key and value bits per coordinate)");
  const std::string budgetText = a.str("budget-bits", "");
  char* end = nullptr;
  const double budget = std::strtod(budgetText.c_str(), &end);
  if (budgetText.empty() || *end != 0 || !(budget >= 1 && budget <= 8)) throw UsageError("--budget-bits expects a number in 1..8, got '" + budgetText + "'");
  const std::string metric = a.str("metric", "attention_cosine");
  const MethodSpec spec = parseOr("--method", [&] { return parseMethod(a.str("method", "tq-mse")); });
  if (!methodHasBits(spec.method)) throw UsageError("--method: " + methodName(spec.method) + " has a fixed width; nothing to allocate");
  const auto dump = openDumpArgument(onlyFile(a, "allocate"), loadOptions(a));
  const BackendChoice choice = parseOr("--backend", [&] { return parseBackendChoice(a.str("backend", "auto")); });
  std::string note;
  auto backend = chooseBackend(choice, &note);
  SweepConfig c;
  c.keyBits.clear();
  c.valueBits.clear();
  for (int b = 1; b <= methodMaxBits(spec.method); ++b) c.keyBits.push_back(b), c.valueBits.push_back(b);
  if (spec.method == Method::TurboQuant) {
    c.modes = {spec.mode};
  } else {
    c.modes.clear();
    c.methods = {spec.method};
  }
  const int d = dump->summary().headDim;
  c.projDims = {static_cast<int>(a.integer("proj-dim", 0, 0, 16384))};
  applySweepFlags(a, *dump, c);
  const SweepResult r = parseOr(dump->path(), [&] { return runSweep(*dump, c, *backend); });
  KeyVariant family{spec.mode, 0, spec.method == Method::TurboQuant && spec.mode != KeyMode::Mse ? (c.projDims[0] > 0 ? c.projDims[0] : d) : 0, spec.method};
  const AllocationPlan p = parseOr("--metric", [&] { return allocateBits(r, family, metric, budget, a.flag("per-head")); });
  auto jnumber = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  if (a.flag("json")) {
    json units = json::array();
    for (const auto& u : p.units)
      units.push_back({{"layer", u.layer}, {"kv_head", u.kvHead < 0 ? json(nullptr) : json(u.kvHead)}, {"key_bits", u.keyBits},
                       {"value_bits", p.values ? json(u.valueBits) : json(nullptr)}, {"metric", u.keyMetric},
                       {"output_error", p.values ? json(u.outputError) : json(nullptr)}});
    out << json({{"command", "allocate"}, {"file", dump->path()}, {"model", dump->modelName()}, {"method", family.methodName()},
                 {"method_options", methodOptionsLabel(spec.method, c.methodOptions)}, {"key_centering", centeringLabel(c)},
                 {"metric", p.metric}, {"budget_bits", budget}, {"per_head", a.flag("per-head")}, {"backend", r.backend}, {"device", r.device},
                 {"queries", r.queryLabel}, {"seconds", r.seconds}, {"plan", units}, {"average_key_bits", p.averageKeyBits},
                 {"average_value_bits", p.values ? json(p.averageValueBits) : json(nullptr)}, {"measured_metric", p.measuredMetric},
                 {"measured_output_error", p.values ? json(p.measuredOutputError) : json(nullptr)}, {"uniform_metric", jnumber(p.uniformMetric)},
                 {"uniform_output_error", jnumber(p.uniformOutputError)}, {"uniform_floor_metric", jnumber(p.uniformBelowMetric)},
                 {"uniform_ceil_metric", jnumber(p.uniformAboveMetric)}})
               .dump(2)
        << "\n";
    return 0;
  }
  (void)err;
  out << dump->path() << ": " << dump->summary().describe() << "\n"
      << family.methodName() << " · " << r.queryLabel << " · " << r.backend << " (" << r.device << ") · " << std::setprecision(3) << r.seconds
      << " s · greedy on the measured " << p.metric << " (keys) and output error (values), average budget " << budget << " bits\n";
  out << " layer" << (a.flag("per-head") ? "  kv" : "") << "  K  V      metric  out-err   (metric: " << p.metric << ")\n";
  for (const auto& u : p.units) {
    out << std::setw(6) << u.layer;
    if (a.flag("per-head")) out << std::setw(4) << u.kvHead;
    out << std::setw(3) << u.keyBits << std::setw(3) << (p.values ? std::to_string(u.valueBits) : "-") << std::fixed << std::setprecision(4)
        << std::setw(12) << u.keyMetric << std::setw(9) << u.outputError << "\n";
    out.unsetf(std::ios::floatfield);
  }
  out << std::fixed << std::setprecision(4) << "plan:    average K " << p.averageKeyBits << " / V " << p.averageValueBits << " bits · " << p.metric << " "
      << p.measuredMetric << " · output error " << p.measuredOutputError << "\n";
  if (std::isfinite(p.uniformMetric))
    out << "uniform: K " << static_cast<int>(budget) << " / V " << static_cast<int>(budget) << " bits · " << p.metric << " " << p.uniformMetric
        << " · output error " << p.uniformOutputError << "\n";
  else
    out << "uniform: not a whole width; at " << std::floor(budget) << " bits " << p.uniformBelowMetric << ", at " << std::ceil(budget) << " bits "
        << p.uniformAboveMetric << "\n";
  out.unsetf(std::ios::floatfield);
  return 0;
}

}  // namespace

static int dispatch(const std::string& cmd, const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

int runCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    out << "tqstudio-cli " << TQ_VERSION << "\n";
    return 0;
  }
  const std::string cmd = args[0];
  try {
    // --memory-budget SIZE (any command): the one budget that requests sized by input are checked against.
    struct RestoreBudget {  // runCli may run many times in one process (tests): the option is per call
      uint64_t before = memoryBudget();
      ~RestoreBudget() { setMemoryBudget(before); }
    } restore;
    std::vector<std::string> rest;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& s = args[i];
      if (i > 0 && (s == "--memory-budget" || s.rfind("--memory-budget=", 0) == 0)) {
        std::string v;
        if (s == "--memory-budget") {
          if (i + 1 >= args.size()) throw UsageError("option --memory-budget needs a value");
          v = args[++i];
        } else {
          v = s.substr(16);
        }
        setMemoryBudget(parseOr("--memory-budget", [&] { return parseByteSize(v, "--memory-budget"); }));
        continue;
      }
      rest.push_back(s);
    }
    return dispatch(cmd, rest, out, err);
  } catch (const UsageError& e) {
    err << "tqstudio-cli " << cmd << ": " << e.what() << "\n";
    return 2;
  }
}

static int dispatch(const std::string& cmd, const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    if (cmd == "validate") return cmdValidate(Args(args, 1, {"json"}), out);
    if (cmd == "crosscheck") return cmdCrosscheck(Args(args, 1, {"json"}), out);
    if (cmd == "bench") return cmdBench(Args(args, 1, {"json"}), out);
    if (cmd == "memory") return cmdMemory(Args(args, 1, {"json"}), out);
    if (cmd == "presets") return cmdPresets(Args(args, 1, {"json"}), out);
    if (cmd == "info") return cmdInfo(Args(args, 1, {"json"}), out);
    if (cmd == "compress") return cmdCompress(Args(args, 1, {"json", "keys-only", "force"}), out);
    if (cmd == "export-figures") {
#ifdef TQ_HAVE_UI
      return tq::ui::runExportFigures({args.begin() + 1, args.end()}, out, err);
#else
      throw UsageError("this build has no GUI library (configured with TQ_BUILD_GUI=OFF), which export-figures uses to render the views");
#endif
    }
    if (cmd == "export-lesson") {
#ifdef TQ_HAVE_UI
      return tq::ui::runExportLesson({args.begin() + 1, args.end()}, out, err);
#else
      throw UsageError("this build has no GUI library (configured with TQ_BUILD_GUI=OFF), which export-lesson uses to draw the pages");
#endif
    }
    if (cmd == "evaluate") return cmdEvaluate(Args(args, 1, {"json", "csv", "reference-one-bit", "norm-correction", "qjl-orthogonal"}), out, err);
    if (cmd == "allocate") return cmdAllocate(Args(args, 1, {"json", "per-head", "qjl-orthogonal"}), out, err);
    err << "tqstudio-cli: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
  } catch (const UsageError& e) {
    err << "tqstudio-cli " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const LoadCancelled& e) {
    err << "tqstudio-cli " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const DataError& e) {
    err << "tqstudio-cli " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const BudgetError& e) {
    err << "tqstudio-cli " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    err << "tqstudio-cli " << cmd << ": ran out of memory (a request passed the memory budget of " << formatBytes(static_cast<double>(memoryBudget()))
        << " but the machine had less free; lower it with --memory-budget)\n";
    return 2;
  } catch (const std::invalid_argument& e) {
    err << "tqstudio-cli " << cmd << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    err << "tqstudio-cli " << cmd << ": error: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace tq
