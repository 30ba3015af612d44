// SPDX-License-Identifier: GPL-3.0-or-later
#include "sweep/sweep.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "attention/attention.h"
#include "util/parallel.h"
#include "util/rng.h"

namespace tq {

const char* querySourceName(QuerySource q) {
  switch (q) {
    case QuerySource::Dump: return "dump";
    case QuerySource::LastKey: return "last-key";
    default: return "random";
  }
}

QuerySource parseQuerySource(const std::string& s) {
  if (s == "dump") return QuerySource::Dump;
  if (s == "last-key" || s == "lastkey" || s == "last_key") return QuerySource::LastKey;
  if (s == "random") return QuerySource::Random;
  throw std::invalid_argument("unknown query source '" + s + "' (expected dump, last-key or random)");
}

void SweepConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
  };
  need(!keyBits.empty() && !valueBits.empty() && !modes.empty() && !projDims.empty(), "every grid axis needs at least one value");
  for (int b : keyBits) need(b >= 1 && b <= 8, "key bits must be in 1..8, got " + std::to_string(b));
  for (int b : valueBits) need(b >= 1 && b <= 8, "value bits must be in 1..8, got " + std::to_string(b));
  for (int m : projDims) need(m >= 0 && m <= 16384, "proj_dim must be in 0..16384, got " + std::to_string(m));
  need(maxQueries >= 1 && maxQueries <= 100000, "max queries must be in 1..100000");
  need(rotation != RotationKind::Explicit, "sweeps use a seeded haar or hadamard rotation");
}

uint64_t layerSeed(uint64_t seed, int layer, bool values) {
  return seed + 1000003ull * static_cast<uint64_t>(layer) + (values ? 500ull : 0ull);
}

std::vector<KeyVariant> keyVariants(const SweepConfig& c, int headDim) {
  std::vector<KeyVariant> out;
  for (KeyMode mode : c.modes)
    for (int b : c.keyBits) {
      if (mode == KeyMode::Mse) {
        KeyVariant v{mode, b, 0};
        if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
        continue;
      }
      for (int m : c.projDims) {
        KeyVariant v{mode, b, m > 0 ? m : headDim};
        if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
      }
    }
  return out;
}

namespace {

struct HeadQueries {
  std::vector<float> q;       // nq x d
  std::vector<int> position;  // causal limit (inclusive key index)
};

HeadQueries makeQueries(const KvSource& src, const SweepConfig& cfg, int layer, int qHead, const std::vector<float>& keys, int seq, int d) {
  HeadQueries hq;
  const size_t D = static_cast<size_t>(d);
  if (cfg.queries == QuerySource::Dump) {
    const int lo = std::max(0, seq / 4);
    const int n = std::min(cfg.maxQueries, seq - lo);
    for (int i = 0; i < n; ++i) hq.position.push_back(n == 1 ? seq - 1 : lo + static_cast<int>(std::llround(static_cast<double>(i) * (seq - 1 - lo) / (n - 1))));
    hq.q = src.queryRows(layer, qHead, hq.position);
    if (hq.q.size() != hq.position.size() * D)
      throw std::invalid_argument("the source has no queries for layer " + std::to_string(layer) + " head " + std::to_string(qHead) +
                                  ": choose a proxy query source (last-key or random)");
  } else if (cfg.queries == QuerySource::LastKey) {
    hq.position.push_back(seq - 1);
    hq.q.assign(keys.end() - static_cast<long>(D), keys.end());
  } else {
    double meanNorm = 0;
    for (int t = 0; t < seq; ++t) {
      double s = 0;
      for (size_t j = 0; j < D; ++j) s += static_cast<double>(keys[t * D + j]) * keys[t * D + j];
      meanNorm += std::sqrt(s);
    }
    meanNorm /= seq;
    const uint64_t sd = layerSeed(cfg.seed, layer, false) ^ 0x51ed270b27f2a9ull;
    for (int i = 0; i < cfg.maxQueries; ++i) {
      std::vector<float> v(D);
      double s = 0;
      for (size_t j = 0; j < D; ++j) {
        v[j] = static_cast<float>(standardNormal(sd, kStreamValidate + static_cast<uint64_t>(qHead), static_cast<uint64_t>(i) * D + j));
        s += static_cast<double>(v[j]) * v[j];
      }
      const float sc = static_cast<float>(meanNorm / std::sqrt(s));
      for (auto& x : v) x *= sc;
      hq.position.push_back(seq - 1);
      hq.q.insert(hq.q.end(), v.begin(), v.end());
    }
  }
  return hq;
}

}  // namespace

std::vector<SweepSummary> SweepResult::summary() const {
  std::vector<SweepSummary> out;
  for (const auto& r : rows) {
    auto it = std::find_if(out.begin(), out.end(), [&](const SweepSummary& s) { return s.key == r.key && s.valueBits == r.valueBits; });
    if (it == out.end()) {
      SweepSummary s;
      s.key = r.key;
      s.valueBits = r.valueBits;
      s.worst = r.m;
      s.worst.bias = std::fabs(r.m.bias);
      s.keyBytesPerVector = r.keyBytesPerVector;
      s.valueBytesPerVector = r.valueBytesPerVector;
      out.push_back(s);
      it = out.end() - 1;
    }
    it->mean.accumulate(r.m);
    ++it->rows;
    auto& w = it->worst;
    w.logitCosine = std::min(w.logitCosine, r.m.logitCosine);
    w.attentionCosine = std::min(w.attentionCosine, r.m.attentionCosine);
    w.top1 = std::min(w.top1, r.m.top1);
    w.top5 = std::min(w.top5, r.m.top5);
    w.kl = std::max(w.kl, r.m.kl);
    w.outputError = std::max(w.outputError, r.m.outputError);
    w.bias = std::max(w.bias, std::fabs(r.m.bias));
    w.variance = std::max(w.variance, r.m.variance);
    w.slope = std::fabs(r.m.slope - 1) > std::fabs(w.slope - 1) ? r.m.slope : w.slope;
    w.correlation = std::min(w.correlation, r.m.correlation);
  }
  for (auto& s : out) s.mean.finish();
  return out;
}

SweepResult runSweep(const KvSource& src, const SweepConfig& cfg, Backend& backend, const ProgressFn& progress) {
  cfg.validate();
  const auto t0 = std::chrono::steady_clock::now();
  const KvShape shape = src.shape();
  if (shape.layers <= 0 || shape.kvHeads <= 0 || shape.seq <= 0 || shape.headDim <= 0)
    throw std::invalid_argument("the source is empty (no layers, heads or tokens)");
  const int d = shape.headDim, dv = shape.headDimV > 0 ? shape.headDimV : shape.headDim, seq = shape.seq;
  const bool useDumpQueries = cfg.queries == QuerySource::Dump;
  if (useDumpQueries && !shape.hasQueries)
    throw std::invalid_argument("this source has no queries; choose a proxy query source (last-key or random)");
  const int qHeads = useDumpQueries ? shape.qHeads : shape.kvHeads;  // proxies: one per kv head
  std::vector<int> layers = cfg.layers, heads = cfg.qHeads;
  if (layers.empty())
    for (int l = 0; l < shape.layers; ++l) layers.push_back(l);
  if (heads.empty())
    for (int h = 0; h < qHeads; ++h) heads.push_back(h);
  for (int l : layers)
    if (l < 0 || l >= shape.layers) throw std::invalid_argument("layer " + std::to_string(l) + " out of range 0.." + std::to_string(shape.layers - 1));
  for (int h : heads)
    if (h < 0 || h >= qHeads) throw std::invalid_argument("head " + std::to_string(h) + " out of range 0.." + std::to_string(qHeads - 1));
  const auto variants = keyVariants(cfg, d);
  const bool values = cfg.evaluateValues && shape.hasValues;
  const std::vector<int> vbits = values ? cfg.valueBits : std::vector<int>{};

  SweepResult res;
  res.config = cfg;
  res.sourceName = src.name();
  res.modelName = src.modelName();
  res.queryLabel = useDumpQueries ? "dump queries" : (cfg.queries == QuerySource::LastKey ? "proxy: last key" : "proxy: random queries");
  res.backend = backend.name();
  res.device = backend.device();
  res.headDim = d;
  res.tokens = static_cast<size_t>(seq);

  // Tasks: (layer, kv head) with the query heads that map to it.
  struct Task {
    int layer, kvHead;
    std::vector<int> qHeads;
  };
  std::vector<Task> tasks;
  for (int l : layers)
    for (int kv = 0; kv < shape.kvHeads; ++kv) {
      Task t{l, kv, {}};
      for (int h : heads)
        if ((useDumpQueries ? shape.kvHeadOf(h) : h) == kv) t.qHeads.push_back(h);
      if (!t.qHeads.empty()) tasks.push_back(t);
    }
  const size_t total = tasks.size() * variants.size();
  std::atomic<size_t> done{0};
  std::atomic<bool> cancel{false};
  std::mutex mutex;  // rows, quantizer cache, progress calls
  std::map<std::tuple<int, int, int, int>, std::shared_ptr<Quantizer>> qcache;
  auto quantizer = [&](KeyMode mode, int bits, int m, int layer, bool isValue) {
    const auto key = std::make_tuple(static_cast<int>(mode) * 100 + bits + (isValue ? 1000 : 0), m, layer, 0);
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = qcache.find(key);
      if (it != qcache.end()) return it->second;
    }
    QuantConfig qc;
    qc.dim = isValue ? dv : d;
    qc.bits = bits;
    qc.mode = mode;
    qc.projDim = m;
    qc.rotation = cfg.rotation;
    qc.law = cfg.law;
    qc.seed = layerSeed(cfg.seed, layer, isValue);
    qc.referenceOneBit = cfg.referenceOneBit;
    auto q = std::make_shared<Quantizer>(qc);  // built outside the lock (deterministic: a racing twin is identical)
    std::lock_guard<std::mutex> lock(mutex);
    return qcache.emplace(key, q).first->second;
  };
  const double scale = src.softmaxScale();
  std::exception_ptr failure;
  // Build every quantizer of the grid up front on all cores (a Prod quantizer draws its QJL matrix; on a
  // GPU the tasks are short and would otherwise wait for them one by one).
  {
    struct Need {
      KeyMode mode;
      int bits, m, layer;
      bool isValue;
    };
    std::vector<Need> needs;
    for (int l : layers) {
      for (const auto& v : variants) needs.push_back({v.mode, v.bits, v.projDim, l, false});
      for (int vb : vbits) needs.push_back({KeyMode::Mse, vb, 0, l, true});
    }
    parallelRanges(needs.size(), 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) quantizer(needs[i].mode, needs[i].bits, needs[i].m, needs[i].layer, needs[i].isValue);
    });
  }

  // TQ_SWEEP_PROFILE=1: thread-seconds spent reading the source, building queries and in evaluateTask, to stderr
  static const bool profile = std::getenv("TQ_SWEEP_PROFILE") != nullptr;
  std::atomic<int64_t> usRead{0}, usQueries{0}, usDevice{0};
  auto usSince = [](std::chrono::steady_clock::time_point a) {
    return static_cast<int64_t>(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count());
  };
  // Backends with a device (CUDA) evaluate a whole task there: one upload, one download of the metrics.
  const bool deviceTasks = backend.name() != "CPU";
  auto runTaskOnDevice = [&](const Task& task, const std::vector<float>& K, const std::vector<float>& V) -> bool {
    const auto tq0 = std::chrono::steady_clock::now();
    std::vector<HeadQueries> hqs;
    SweepTaskInput in;
    std::vector<float> Q;
    std::vector<int> limits;
    for (int h : task.qHeads) {
      hqs.push_back(makeQueries(src, cfg, task.layer, h, K, seq, d));
      Q.insert(Q.end(), hqs.back().q.begin(), hqs.back().q.end());
      limits.insert(limits.end(), hqs.back().position.begin(), hqs.back().position.end());
    }
    std::vector<std::shared_ptr<Quantizer>> kqs, vqs;
    for (const auto& var : variants) kqs.push_back(quantizer(var.mode, var.bits, var.projDim, task.layer, false));
    for (int vb : vbits) vqs.push_back(quantizer(KeyMode::Mse, vb, 0, task.layer, true));
    in.keys = K.data();
    in.values = values ? V.data() : nullptr;
    in.seq = static_cast<size_t>(seq);
    in.d = d;
    in.dv = dv;
    in.scale = scale;
    in.queries = Q.data();
    in.limits = limits.data();
    in.nq = limits.size();
    for (auto& q : kqs) in.keyQuantizers.push_back(q.get());
    if (values)
      for (auto& q : vqs) in.valueQuantizers.push_back(q.get());
    SweepTaskOutput out;
    usQueries += usSince(tq0);
    const auto tDev = std::chrono::steady_clock::now();
    const bool ran = backend.evaluateTask(in, out);
    usDevice += usSince(tDev);
    if (!ran) return false;
    const size_t nk = variants.size(), nq = in.nq, nvq = in.valueQuantizers.size(), nvOut = std::max<size_t>(1, nvq);
    if (out.keyMetrics.size() != nk * nq * SweepTaskOutput::kKeyMetrics || out.outputError.size() != nk * nvOut * nq || out.keyMse.size() != nk ||
        out.valueMse.size() != nvq)
      throw std::runtime_error("the backend returned task results of the wrong size");
    auto bytesPer = [](const Quantizer& q) {
      CompressedVectors cv;
      cv.dim = q.dim();
      cv.mseBits = q.mseBits();
      cv.projDim = q.projDim();
      return cv.bytesPerVector();
    };
    std::vector<SweepRow> local;
    for (size_t k = 0; k < nk; ++k) {
      if (cancel.load()) return true;
      size_t q0 = 0;
      for (size_t hi = 0; hi < hqs.size(); ++hi) {
        const size_t hn = hqs[hi].position.size();
        for (size_t vi = 0; vi < nvOut; ++vi) {
          SweepRow row;
          row.key = variants[k];
          row.layer = task.layer;
          row.qHead = task.qHeads[hi];
          row.kvHead = task.kvHead;
          row.keyVectorMse = out.keyMse[k];
          row.keyBytesPerVector = bytesPer(*kqs[k]);
          row.tokens = static_cast<size_t>(seq);
          if (nvq > 0) {
            row.valueBits = vbits[vi];
            row.valueVectorMse = out.valueMse[vi];
            row.valueBytesPerVector = bytesPer(*vqs[vi]);
          }
          for (size_t i = q0; i < q0 + hn; ++i) {
            const double* km = out.keyMetrics.data() + (k * nq + i) * SweepTaskOutput::kKeyMetrics;
            AttentionMetrics m;
            m.logitCosine = km[0];
            m.attentionCosine = km[1];
            m.kl = km[2];
            m.top1 = km[3];
            m.top5 = km[4];
            m.bias = km[5];
            m.variance = km[6];
            m.slope = km[7];
            m.correlation = km[8];
            if (nvq > 0) m.outputError = out.outputError[(k * nvOut + vi) * nq + i];
            m.count = 0;
            row.m.accumulate(m);
          }
          row.m.finish();
          local.push_back(row);
        }
        q0 += hn;
      }
    }
    std::lock_guard<std::mutex> lock(mutex);
    res.rows.insert(res.rows.end(), local.begin(), local.end());
    for (size_t k = 0; k < nk; ++k) {
      const size_t dn = ++done;
      if (progress && !cancel.load() && !progress(dn, total)) cancel.store(true);
    }
    return true;
  };

  auto runTask = [&](const Task& task) {
    const auto tRead = std::chrono::steady_clock::now();
    const auto K = src.keys(task.layer, task.kvHead);
    if (K.size() != static_cast<size_t>(seq) * d) throw std::runtime_error("keys of layer " + std::to_string(task.layer) + " have the wrong size");
    std::vector<float> V;
    if (values) {
      V = src.values(task.layer, task.kvHead);
      if (V.size() != static_cast<size_t>(seq) * dv) throw std::runtime_error("values of layer " + std::to_string(task.layer) + " have the wrong size");
    }
    usRead += usSince(tRead);
    if (deviceTasks && runTaskOnDevice(task, K, V)) return;
    // Per query head: queries, exact logits, exact softmax and exact outputs.
    struct QH {
      int head;
      HeadQueries hq;
      std::vector<float> exact;   // nq x seq
      std::vector<float> exactOut;  // nq x dv
    };
    std::vector<QH> qhs;
    for (int h : task.qHeads) {
      QH x{h, makeQueries(src, cfg, task.layer, h, K, seq, d), {}, {}};
      const size_t nq = x.hq.position.size();
      x.exact.resize(nq * seq);
      exactScores(x.hq.q.data(), nq, K.data(), static_cast<size_t>(seq), static_cast<size_t>(d), x.exact.data());
      if (values) {
        x.exactOut.resize(nq * dv);
        std::vector<double> p(seq);
        for (size_t i = 0; i < nq; ++i) {
          const size_t n = static_cast<size_t>(x.hq.position[i]) + 1;
          softmax(x.exact.data() + i * seq, n, scale, p.data());
          weightedValues(p.data(), n, V.data(), static_cast<size_t>(dv), x.exactOut.data() + i * dv);
        }
      }
      qhs.push_back(std::move(x));
    }
    // Values per bit-width: compress once.
    struct VC {
      int bits;
      std::shared_ptr<Quantizer> q;
      CompressedVectors cv;
      double mse;
    };
    std::vector<VC> vcs;
    for (int vb : vbits) {
      VC vc{vb, quantizer(KeyMode::Mse, vb, 0, task.layer, true), {}, 0};
      backend.compress(*vc.q, V.data(), static_cast<size_t>(seq), vc.cv);
      std::vector<float> rec(V.size());
      backend.decompress(*vc.q, vc.cv, rec.data());
      vc.mse = vectorMse(V.data(), rec.data(), static_cast<size_t>(seq), static_cast<size_t>(dv));
      vcs.push_back(std::move(vc));
    }
    for (const auto& var : variants) {
      if (cancel.load()) return;
      auto kq = quantizer(var.mode, var.bits, var.projDim, task.layer, false);
      CompressedVectors kcv;
      backend.compress(*kq, K.data(), static_cast<size_t>(seq), kcv);
      std::vector<float> krec(K.size());
      backend.decompress(*kq, kcv, krec.data());
      const double kmse = kq->mseBits() > 0 ? vectorMse(K.data(), krec.data(), static_cast<size_t>(seq), static_cast<size_t>(d)) : 1.0;
      std::vector<SweepRow> local;
      for (auto& x : qhs) {
        const size_t nq = x.hq.position.size();
        std::vector<float> est(nq * seq);
        backend.scores(*kq, kcv, x.hq.q.data(), nq, est.data());
        // softmax weights of the estimate, zero beyond each query's causal limit
        std::vector<float> w(nq * seq, 0.0f);
        std::vector<double> p(seq);
        for (size_t i = 0; i < nq; ++i) {
          const size_t n = static_cast<size_t>(x.hq.position[i]) + 1;
          softmax(est.data() + i * seq, n, scale, p.data());
          for (size_t t = 0; t < n; ++t) w[i * seq + t] = static_cast<float>(p[t]);
        }
        std::vector<AttentionMetrics> keyOnly(nq);
        for (size_t i = 0; i < nq; ++i) {
          const size_t n = static_cast<size_t>(x.hq.position[i]) + 1;
          keyOnly[i] = attentionMetrics(x.exact.data() + i * seq, est.data() + i * seq, n, scale);
        }
        const size_t nv = std::max<size_t>(1, vcs.size());
        for (size_t vi = 0; vi < nv; ++vi) {
          SweepRow row;
          row.key = var;
          row.layer = task.layer;
          row.qHead = x.head;
          row.kvHead = task.kvHead;
          row.keyVectorMse = kmse;
          row.keyBytesPerVector = kcv.count ? kcv.bytes() / kcv.count : 0;
          row.tokens = static_cast<size_t>(seq);
          std::vector<float> estOut;
          if (!vcs.empty()) {
            const VC& vc = vcs[vi];
            row.valueBits = vc.bits;
            row.valueVectorMse = vc.mse;
            row.valueBytesPerVector = vc.cv.count ? vc.cv.bytes() / vc.cv.count : 0;
            estOut.resize(nq * dv);
            backend.weightedSum(*vc.q, vc.cv, w.data(), nq, estOut.data());
          }
          for (size_t i = 0; i < nq; ++i) {
            AttentionMetrics m = keyOnly[i];
            if (!estOut.empty()) {
              double num = 0, den = 0;
              for (int j = 0; j < dv; ++j) {
                const double e = static_cast<double>(x.exactOut[i * dv + j]) - estOut[i * dv + j];
                num += e * e;
                den += static_cast<double>(x.exactOut[i * dv + j]) * x.exactOut[i * dv + j];
              }
              m.outputError = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
            }
            m.count = 0;
            row.m.accumulate(m);
          }
          row.m.finish();
          local.push_back(row);
        }
      }
      std::lock_guard<std::mutex> lock(mutex);
      res.rows.insert(res.rows.end(), local.begin(), local.end());
      const size_t dn = ++done;
      if (progress && !cancel.load() && !progress(dn, total)) cancel.store(true);
    }
  };

  auto guarded = [&](size_t b, size_t e) {
    for (size_t i = b; i < e && !cancel.load(); ++i) {
      try {
        runTask(tasks[i]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failure) failure = std::current_exception();
        cancel.store(true);
      }
    }
  };
  // Interleave tasks over threads so progress advances evenly. With a device backend the threads read the
  // source and build the queries while another thread's task runs on the device (the backend serialises
  // its device calls).
  const size_t threads = static_cast<size_t>(std::max(1, cpuThreads()));
  parallelRanges(threads, 1, [&](size_t tb, size_t te) {
    for (size_t t = tb; t < te; ++t)
      for (size_t i = t; i < tasks.size() && !cancel.load(); i += threads) guarded(i, i + 1);
  });
  if (failure) std::rethrow_exception(failure);
  res.cancelled = cancel.load();
  std::sort(res.rows.begin(), res.rows.end(), [](const SweepRow& a, const SweepRow& b) {
    return std::make_tuple(static_cast<int>(a.key.mode), a.key.bits, a.key.projDim, a.valueBits, a.layer, a.qHead) <
           std::make_tuple(static_cast<int>(b.key.mode), b.key.bits, b.key.projDim, b.valueBits, b.layer, b.qHead);
  });
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (profile)
    std::fprintf(stderr, "runSweep profile: wall %.3f s; thread-seconds: source keys/values %.3f, queries + quantizer lookup %.3f, evaluateTask %.3f\n",
                 res.seconds, usRead.load() * 1e-6, usQueries.load() * 1e-6, usDevice.load() * 1e-6);
  return res;
}

}  // namespace tq
