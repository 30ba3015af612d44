// SPDX-License-Identifier: GPL-3.0-or-later
#include "sweep/sweep.h"

#include "util/half.h"

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
#include <tuple>

#include "attention/attention.h"
#include "util/parallel.h"
#include "util/rng.h"

namespace tq {

void SweepConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
  };
  need(!keyBits.empty() && !valueBits.empty() && !projDims.empty(), "every grid axis needs at least one value");
  need(!modes.empty() || !methods.empty(), "choose at least one method (a TurboQuant key mode or a baseline)");
  for (Method m : methods) need(m != Method::TurboQuant, "TurboQuant's variants are chosen by key mode, not in the methods list");
  methodOptions.validate();
  for (int b : keyBits) need(b >= 1 && b <= 8, "key bits must be in 1..8, got " + std::to_string(b));
  for (int b : valueBits) need(b >= 1 && b <= 8, "value bits must be in 1..8, got " + std::to_string(b));
  for (int m : projDims) need(m >= 0 && m <= 16384, "proj_dim must be in 0..16384, got " + std::to_string(m));
  need(maxQueries >= 1 && maxQueries <= 100000, "max queries must be in 1..100000");
  need(rotation != RotationKind::Explicit, "sweeps use a seeded haar or hadamard rotation");
  need(sampleCells <= 100000000, "sample cells must be at most 1e8");
  need(centerWindow >= 1 && centerWindow <= (1 << 24), "the centering window must be in 1..16777216 tokens");
  need(protectLayers >= 0 && protectLayers <= (1 << 20), "the protected layer count must be in 0..1048576");
  need(protectBits >= 1 && protectBits <= 8, "protected layers take 1..8 bits, got " + std::to_string(protectBits));
  need(recentWindow >= 0 && recentWindow <= (1 << 24), "the recent fp16 window must be in 0..16777216 tokens");
}

std::string protectLayersLabel(const SweepConfig& c) {
  return c.protectLayers > 0 ? std::to_string(c.protectLayers) + ":" + std::to_string(c.protectBits) : "none";
}

void parseProtectLayers(const std::string& s, int* layers, int* bits) {
  if (s == "none" || s == "0") {
    *layers = 0;
    return;
  }
  const auto colon = s.find(':');
  char* e1 = nullptr;
  char* e2 = nullptr;
  const std::string a = s.substr(0, colon), b = colon == std::string::npos ? "" : s.substr(colon + 1);
  const long n = std::strtol(a.c_str(), &e1, 10), v = std::strtol(b.c_str(), &e2, 10);
  if (colon == std::string::npos || a.empty() || b.empty() || *e1 || *e2 || n < 0 || n > (1 << 20) || v < 1 || v > 8)
    throw std::invalid_argument("protected layers must be N:BITS (N layers at each end, BITS in 1..8) or none, got '" + s + "'");
  *layers = static_cast<int>(n);
  *bits = static_cast<int>(v);
}

bool isProtectedLayer(int protectLayers, int l, int layers) {
  return protectLayers > 0 && (l < protectLayers || l >= layers - protectLayers);
}
bool isProtectedLayer(const SweepConfig& c, int l, int layers) {
  return isProtectedLayer(c.protectLayers, l, layers);
}

VariantCoder makeVariantCoder(const SweepConfig& cfg, Method m, KeyMode mode, int bits, int projDim, bool isValue, int l, int layers, int dim) {
  auto make = [&](KeyMode md, int b, int pm, bool refOneBit) {
    QuantConfig qc;
    qc.dim = dim;
    qc.bits = b;
    qc.mode = md;
    qc.projDim = md == KeyMode::Mse ? 0 : pm;
    qc.rotation = cfg.rotation;
    qc.law = cfg.law;
    qc.seed = layerSeed(cfg.seed, l, isValue);
    qc.referenceOneBit = cfg.referenceOneBit || refOneBit;
    qc.orthogonalQjl = cfg.orthogonalQjl;
    return std::make_shared<const Quantizer>(qc);
  };
  const bool prot = isProtectedLayer(cfg, l, layers);
  // a protected layer (the V3 option): every width-taking method at the protected width
  if (prot && (m == Method::TurboQuant || methodHasBits(m))) bits = std::min(cfg.protectBits, methodMaxBits(m));
  VariantCoder out;
  if (m == Method::TurboQuant) {
    out.quantizer = isValue ? make(KeyMode::Mse, bits, 0, false) : make(mode, bits, projDim, false);
  } else if (m == Method::TqRef11 && !isValue) {  // the reference's 1+1 (protected layers: tq-prod at the protected width)
    out.quantizer = make(KeyMode::Prod, prot ? cfg.protectBits : 1, projDim, !prot);
  } else {
    auto tq = m == Method::TqMseNormCorrected || m == Method::TqMseOutliers ? make(KeyMode::Mse, std::min(bits, 8), 0, false) : nullptr;
    out.codec = makeCodec(m, bits, isValue, cfg.methodOptions, tq);
  }
  return out;
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
  for (Method m : c.methods) {
    std::vector<int> widths = c.keyBits;
    if (!methodHasBits(m)) widths = {methodFixedBits(m)};
    for (int b : widths) {
      if (methodHasBits(m) && b > methodMaxBits(m)) continue;
      KeyVariant v{KeyMode::Mse, b, 0, m};
      if (m == Method::TqRef11) v = {KeyMode::Prod, 1, headDim, m};  // 1 MSE bit + d signs
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
  }
  return out;
}

std::vector<ValueVariant> valueVariants(const SweepConfig& c) {
  std::vector<ValueVariant> out;
  if (!c.modes.empty())
    for (int b : c.valueBits) out.push_back({Method::TurboQuant, b});
  for (Method m : c.methods) {
    if (valueFamily(m) != m) {  // tq-ref11: TurboQuant-MSE values
      if (c.modes.empty())
        for (int b : c.valueBits)
          if (std::find(out.begin(), out.end(), ValueVariant{Method::TurboQuant, b}) == out.end()) out.push_back({Method::TurboQuant, b});
      continue;
    }
    std::vector<int> widths = c.valueBits;
    if (!methodHasBits(m)) widths = {methodFixedBits(m)};
    for (int b : widths) {
      if (methodHasBits(m) && b > methodMaxBits(m)) continue;
      const ValueVariant v{m, b};
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
  }
  return out;
}

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

std::vector<SweepCell> sweepCells(const KvShape& shape, const SweepConfig& cfg, size_t* cellsInGrid) {
  const bool dumpQueries = cfg.queries == QuerySource::Dump;
  const int qHeads = dumpQueries ? shape.qHeads : shape.kvHeads;  // proxies: one per kv head
  std::vector<int> layers = cfg.layers, heads = cfg.qHeads;
  if (layers.empty())
    for (int l = 0; l < shape.layers; ++l) layers.push_back(l);
  if (heads.empty())
    for (int h = 0; h < qHeads; ++h) heads.push_back(h);
  for (int l : layers)
    if (l < 0 || l >= shape.layers)
      throw std::invalid_argument("layer " + std::to_string(l) + " out of range 0.." + std::to_string(shape.layers - 1));
  for (int h : heads)
    if (h < 0 || h >= qHeads) throw std::invalid_argument("head " + std::to_string(h) + " out of range 0.." + std::to_string(qHeads - 1));
  std::vector<SweepCell> cells;
  for (int l : layers)
    for (int kv = 0; kv < shape.kvHeads; ++kv) {
      SweepCell c{l, kv, {}};
      for (int h : heads)
        if ((dumpQueries ? shape.kvHeadOf(h) : h) == kv) c.qHeads.push_back(h);
      if (!c.qHeads.empty()) cells.push_back(std::move(c));
    }
  if (cellsInGrid) *cellsInGrid = cells.size();
  // Fisher-Yates with a counter-based generator: the same order for the same seed on every machine
  for (size_t i = cells.size(); i > 1; --i) {
    const uint64_t r = randomBits(cfg.seed, 0xce11ce11ull, static_cast<uint64_t>(i));
    std::swap(cells[i - 1], cells[static_cast<size_t>(r % i)]);
  }
  if (cfg.sampleCells > 0 && cfg.sampleCells < cells.size()) cells.resize(cfg.sampleCells);
  return cells;
}

/// Runs a task on the backend (on the CPU when a device backend declines it) with each distinct key
/// quantizer once. Variants whose quantizers compute the same codes (QJL-only at every width: no MSE stage,
/// the same m; TurboQuant-prod at 1 bit without the reference's extra bit) and share a value family get
/// identical metrics, so the task evaluates the first of them and its results are copied to the others:
/// the grid of the GUI has 56 key variants per cell and 32 distinct ones. The output is that of evaluating
/// every variant (a test compares the two).
void evaluateTaskDistinct(Backend& backend, const SweepTaskInput& in, SweepTaskOutput& out, bool* cpuFallback) {
  auto run = [&](const SweepTaskInput& t, SweepTaskOutput& o) {
    if (!backend.evaluateTask(t, o)) {
      *cpuFallback = true;
      cpuEvaluateTask(t, o);
    }
  };
  // TQ_SWEEP_ALL_VARIANTS=1: every variant evaluated (the former work, for comparisons)
  const bool all = std::getenv("TQ_SWEEP_ALL_VARIANTS") != nullptr;  // read per task: tests compare both
  const size_t nkq = in.keyQuantizers.size(), nkc = in.keyCodecs.size();
  std::vector<size_t> first(nkq);  // index among the distinct quantizers
  std::vector<size_t> distinct;    // the first variant of each
  for (size_t k = 0; k < nkq; ++k) {
    const Quantizer& q = *in.keyQuantizers[k];
    first[k] = distinct.size();
    for (size_t u = 0; u < distinct.size() && !all; ++u) {
      const Quantizer& p = *in.keyQuantizers[distinct[u]];
      const bool sameFamily = in.keyFamily.empty() || in.keyFamily[k] == in.keyFamily[distinct[u]];
      if (sameFamily && (&p == &q || (p.contentHash() == q.contentHash() && p.dim() == q.dim() && p.mseBits() == q.mseBits() &&
                                      p.projDim() == q.projDim() && p.rotation().kind() == q.rotation().kind()))) {
        first[k] = u;
        break;
      }
    }
    if (first[k] == distinct.size()) distinct.push_back(k);
  }
  if (distinct.size() == nkq) return run(in, out);
  SweepTaskInput t = in;
  t.keyQuantizers.clear();
  for (size_t k : distinct) t.keyQuantizers.push_back(in.keyQuantizers[k]);
  if (!in.keyFamily.empty()) {
    t.keyFamily.clear();
    for (size_t k : distinct) t.keyFamily.push_back(in.keyFamily[k]);
    t.keyFamily.insert(t.keyFamily.end(), in.keyFamily.begin() + static_cast<long>(nkq), in.keyFamily.end());
  }
  SweepTaskOutput o;
  run(t, o);
  if (cancelRequested(in)) return;
  const size_t nu = distinct.size(), nk = nkq + nkc, nq = in.nq, km = SweepTaskOutput::kKeyMetrics;
  if (o.keyMse.size() != nu + nkc || o.keyMetrics.size() != (nu + nkc) * nq * km || o.outputError.size() % (nu + nkc) != 0)
    throw std::runtime_error("the backend returned task results of the wrong size");
  const size_t perOut = o.outputError.size() / (nu + nkc);
  auto src = [&](size_t k) { return k < nkq ? first[k] : nu + (k - nkq); };
  out = SweepTaskOutput{};
  out.keyMetrics.resize(nk * nq * km);
  out.outputError.resize(nk * perOut);
  out.keyMse.resize(nk);
  for (size_t k = 0; k < nk; ++k) {
    const size_t s = src(k);
    std::copy_n(o.keyMetrics.begin() + static_cast<long>(s * nq * km), nq * km, out.keyMetrics.begin() + static_cast<long>(k * nq * km));
    std::copy_n(o.outputError.begin() + static_cast<long>(s * perOut), perOut, out.outputError.begin() + static_cast<long>(k * perOut));
    out.keyMse[k] = o.keyMse[s];
  }
  out.valueMse = std::move(o.valueMse);
  out.keyCodecBytes = std::move(o.keyCodecBytes);
  out.valueCodecBytes = std::move(o.valueCodecBytes);
}

namespace {

/// What every cell of a sweep shares: the key variants, the value widths and one quantizer per (layer,
/// variant), built the first time a cell of the layer is evaluated.
struct SweepPlan {
  const KvSource* src = nullptr;
  const SweepConfig* cfg = nullptr;
  KvShape shape;
  int d = 0, dv = 0, seq = 0;
  double scale = 1;
  bool values = false;
  std::vector<KeyVariant> variants;
  std::vector<ValueVariant> vvariants;
  struct Layer {
    std::once_flag built;
    /// per key / value variant: a quantizer (TurboQuant) or a codec (the other methods)
    std::vector<std::shared_ptr<const Quantizer>> keys, values;
    std::vector<std::shared_ptr<const VectorCodec>> keyCodecs, valueCodecs;
  };
  std::map<int, std::unique_ptr<Layer>> layers;

  const Layer& layer(int l) {
    Layer& L = *layers.at(l);
    std::call_once(L.built, [&] {
      L.keys.resize(variants.size());
      L.values.resize(vvariants.size());
      L.keyCodecs.resize(variants.size());
      L.valueCodecs.resize(vvariants.size());
      // a Prod quantizer draws its QJL matrix: build the layer's quantizers on all cores
      parallelRanges(variants.size() + vvariants.size(), 1, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
          const bool isValue = i >= variants.size();
          const Method m = isValue ? vvariants[i - variants.size()].method : variants[i].method;
          const int bits = isValue ? vvariants[i - variants.size()].bits : variants[i].bits;
          const KeyMode mode = isValue ? KeyMode::Mse : variants[i].mode;
          const int pm = isValue ? 0 : variants[i].projDim;
          VariantCoder vc = makeVariantCoder(*cfg, m, mode, bits, pm, isValue, l, shape.layers, isValue ? dv : d);
          if (isValue) {
            L.values[i - variants.size()] = std::move(vc.quantizer);
            L.valueCodecs[i - variants.size()] = std::move(vc.codec);
          } else {
            L.keys[i] = std::move(vc.quantizer);
            L.keyCodecs[i] = std::move(vc.codec);
          }
        }
      });
    });
    return L;
  }
};

size_t formulaBytes(const Quantizer& q) {
  CompressedVectors cv;
  cv.dim = q.dim();
  cv.mseBits = q.mseBits();
  cv.projDim = q.projDim();
  return cv.bytesPerVector();
}

/// TQ_SWEEP_PROFILE=1: host time of the cells' phases, summed over the sweep threads (printed by runSweep).
struct CellProfile {
  std::atomic<int64_t> prepUs{0}, backendUs{0}, rowsUs{0}, cells{0};
};
CellProfile& cellProfile() {
  static CellProfile p;
  return p;
}
int64_t usSince(std::chrono::steady_clock::time_point t) {
  return static_cast<int64_t>(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count());
}

/// Evaluates one cell: its queries, one evaluateTask on the backend (on the CPU when a device backend
/// declines it), the metrics turned into rows. Returns no rows when cancelled meanwhile.
std::vector<SweepRow> evaluateCell(SweepPlan& plan, const SweepCell& cell, const std::vector<size_t>& variantIdx, Backend& backend,
                                   const std::atomic<bool>& cancel, const std::function<bool()>& stop, bool* cpuFallback) {
  const auto tCell = std::chrono::steady_clock::now();
  const SweepConfig& cfg = *plan.cfg;
  const KvSource& src = *plan.src;
  const size_t seq = static_cast<size_t>(plan.seq), d = static_cast<size_t>(plan.d), dv = static_cast<size_t>(plan.dv);
  const auto K = src.keys(cell.layer, cell.kvHead);
  if (K.size() != seq * d) throw std::runtime_error("keys of layer " + std::to_string(cell.layer) + " have the wrong size");
  const std::string where = "layer " + std::to_string(cell.layer) + ", kv head " + std::to_string(cell.kvHead);
  requireStorableNorms(K.data(), seq, d, "keys of " + where);
  std::vector<float> V;
  if (plan.values) {
    V = src.values(cell.layer, cell.kvHead);
    if (V.size() != seq * dv) throw std::runtime_error("values of layer " + std::to_string(cell.layer) + " have the wrong size");
    requireStorableNorms(V.data(), seq, dv, "values of " + where);
  }
  const std::vector<int> positions = evaluationPositions(cfg.queries, plan.seq, cfg.maxQueries);
  std::vector<float> Q;
  std::vector<int> limits;
  for (int h : cell.qHeads) {
    const auto q = queryVectors(src, cfg.queries, cfg.seed, cell.layer, h, K, positions);
    Q.insert(Q.end(), q.begin(), q.end());
    limits.insert(limits.end(), positions.begin(), positions.end());
  }
  const auto& L = plan.layer(cell.layer);
  SweepTaskInput in;
  in.keys = K.data();
  // Key centering (core/backend/centering): the quantizers see K - mu; the task adds <q, mu> back.
  const CentredKeys centred = centreKeys(K.data(), seq, d, cfg.centering, cfg.centerWindow);
  if (centred.active()) {
    in.compressKeys = centred.keys.data();
    in.keyOffset = centred.mu.data();
    in.exactKeys = centred.window;
  }
  // the recent fp16 window (after centering's first-token window; the two never overlap)
  in.recentExact = std::min(static_cast<size_t>(cfg.recentWindow), seq - std::min(seq, in.exactKeys));
  in.values = plan.values ? V.data() : nullptr;
  in.seq = seq;
  in.d = plan.d;
  in.dv = plan.dv;
  in.scale = plan.scale;
  in.queries = Q.data();
  in.limits = limits.data();
  in.nq = limits.size();
  in.cancel = &cancel;
  in.stop = stop;
  // the exact keys, values and queries of this cell (a device may keep them resident across sweeps)
  in.dataId = src.instanceId();
  in.cellId = (src.instanceId() * 0x9E3779B97F4A7C15ull) ^ (static_cast<uint64_t>(cell.layer) << 32) ^ static_cast<uint64_t>(cell.kvHead + 1);
  // the task's order: TurboQuant's quantizers, then the codecs (key and value variants alike)
  std::vector<size_t> order, vorder;
  for (size_t k : variantIdx)
    if (L.keys[k]) order.push_back(k), in.keyQuantizers.push_back(L.keys[k].get());
  for (size_t k : variantIdx)
    if (!L.keys[k]) order.push_back(k), in.keyCodecs.push_back(L.keyCodecs[k].get());
  for (size_t k : order) in.keyFamily.push_back(static_cast<int>(valueFamily(plan.variants[k].method)));
  if (plan.values) {
    for (size_t v = 0; v < L.values.size(); ++v)
      if (L.values[v]) vorder.push_back(v), in.valueQuantizers.push_back(L.values[v].get());
    for (size_t v = 0; v < L.values.size(); ++v)
      if (!L.values[v]) vorder.push_back(v), in.valueCodecs.push_back(L.valueCodecs[v].get());
    for (size_t v : vorder) in.valueFamily.push_back(static_cast<int>(plan.vvariants[v].method));
  }
  SweepTaskOutput out;
  const auto tTask = std::chrono::steady_clock::now();
  cellProfile().prepUs += usSince(tCell);
  evaluateTaskDistinct(backend, in, out, cpuFallback);
  const auto tRows = std::chrono::steady_clock::now();
  cellProfile().backendUs += usSince(tTask);
  ++cellProfile().cells;
  struct RowsTime {
    std::chrono::steady_clock::time_point t;
    ~RowsTime() { cellProfile().rowsUs += usSince(t); }
  } rowsTime{tRows};
  if (cancel.load()) return {};
  const size_t nk = variantIdx.size(), nq = in.nq, nvq = vorder.size(), nvOut = std::max<size_t>(1, nvq);
  const size_t nkq = in.keyQuantizers.size(), nvqq = in.valueQuantizers.size();
  if (out.keyMetrics.size() != nk * nq * SweepTaskOutput::kKeyMetrics || out.outputError.size() != nk * nvOut * nq || out.keyMse.size() != nk ||
      out.valueMse.size() != nvq || out.keyCodecBytes.size() != in.keyCodecs.size() || out.valueCodecBytes.size() != in.valueCodecs.size())
    throw std::runtime_error("the backend returned task results of the wrong size");
  std::vector<SweepRow> rows;
  rows.reserve(nk * cell.qHeads.size() * nvOut);
  const size_t hn = positions.size();
  for (size_t k = 0; k < nk; ++k) {
    // values use the keys' method; a method without a value variant at this width (tq-mse-oc at 8 bits)
    // gets key rows without value metrics
    const bool paired = nvq > 0 && std::find(in.valueFamily.begin(), in.valueFamily.end(), in.keyFamily[k]) != in.valueFamily.end();
    for (size_t hi = 0; hi < cell.qHeads.size(); ++hi)
      for (size_t vi = 0; vi < (paired ? nvOut : 1); ++vi) {
        if (paired && in.keyFamily[k] != in.valueFamily[vi]) continue;
        SweepRow row;
        row.key = plan.variants[order[k]];
        row.layer = cell.layer;
        row.qHead = cell.qHeads[hi];
        row.kvHead = cell.kvHead;
        row.keyVectorMse = out.keyMse[k];
        const double keyBytes = k < nkq ? static_cast<double>(formulaBytes(*L.keys[order[k]])) : out.keyCodecBytes[k - nkq];
        row.keyBytesPerVector = centredKeyBytes(keyBytes, seq, d, centred, in.recentExact);
        row.tokens = seq;
        if (paired) {
          row.valueBits = plan.vvariants[vorder[vi]].bits;
          row.valueVectorMse = out.valueMse[vi];
          const double valueBytes = vi < nvqq ? static_cast<double>(formulaBytes(*L.values[vorder[vi]])) : out.valueCodecBytes[vi - nvqq];
          row.valueBytesPerVector =
              windowedKeyBytes(valueBytes, static_cast<double>(seq), static_cast<double>(dv), static_cast<double>(in.recentExact), false);
        }
        for (size_t i = hi * hn; i < (hi + 1) * hn; ++i) {
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
          if (paired) m.outputError = out.outputError[(k * nvOut + vi) * nq + i];
          m.count = 0;
          row.m.accumulate(m);
        }
        row.m.finish();
        rows.push_back(row);
      }
  }
  return rows;
}

void sortRows(std::vector<SweepRow>& rows) {
  std::sort(rows.begin(), rows.end(), [](const SweepRow& a, const SweepRow& b) {
    return std::make_tuple(static_cast<int>(a.key.method), static_cast<int>(a.key.mode), a.key.bits, a.key.projDim, a.valueBits, a.layer, a.qHead) <
           std::make_tuple(static_cast<int>(b.key.method), static_cast<int>(b.key.mode), b.key.bits, b.key.projDim, b.valueBits, b.layer, b.qHead);
  });
}

}  // namespace

SweepResult runSweep(const KvSource& src, const SweepConfig& cfg, Backend& backend, const ProgressFn& progress, const PartialSink& partial) {
  cfg.validate();
  const auto t0 = std::chrono::steady_clock::now();
  const KvShape shape = src.shape();
  if (shape.layers <= 0 || shape.kvHeads <= 0 || shape.seq <= 0 || shape.headDim <= 0)
    throw std::invalid_argument("the source is empty (no layers, heads or tokens)");
  if (cfg.queries == QuerySource::Dump && !shape.hasQueries)
    throw std::invalid_argument("this source has no queries; choose a proxy query source (last-key or random)");
  SweepPlan plan;
  plan.src = &src;
  plan.cfg = &cfg;
  plan.shape = shape;
  plan.d = shape.headDim;
  plan.dv = shape.headDimV > 0 ? shape.headDimV : shape.headDim;
  plan.seq = shape.seq;
  plan.scale = src.softmaxScale();
  plan.values = cfg.evaluateValues && shape.hasValues;
  plan.variants = keyVariants(cfg, plan.d);
  if (plan.values) plan.vvariants = valueVariants(cfg);
  size_t inGrid = 0;
  const std::vector<SweepCell> cells = sweepCells(shape, cfg, &inGrid);
  for (const auto& c : cells)
    if (!plan.layers.count(c.layer)) plan.layers.emplace(c.layer, std::make_unique<SweepPlan::Layer>());

  SweepResult res;
  res.config = cfg;
  res.sourceName = src.name();
  res.modelName = src.modelName();
  res.queryLabel = querySourceLabel(cfg.queries);
  res.backend = backend.name();
  res.device = backend.device();
  res.headDim = plan.d;
  res.headDimV = plan.dv;
  res.tokens = static_cast<size_t>(plan.seq);
  res.cellsTotal = cells.size();
  res.cellsInGrid = inGrid;

  // Work items: (cell, variant subset). With firstVariants, a first pass evaluates those variants on the
  // first kFirstPassCells cells of the order (a split cell repeats its exact side, so only these are
  // split), then the others on them, then every variant on the remaining cells. Each variant of a cell
  // is evaluated once either way.
  constexpr size_t kFirstPassCells = 8;
  std::vector<size_t> firstIdx, restIdx, allIdx;
  for (size_t k = 0; k < plan.variants.size(); ++k) {
    (std::find(cfg.firstVariants.begin(), cfg.firstVariants.end(), plan.variants[k]) != cfg.firstVariants.end() ? firstIdx : restIdx).push_back(k);
    allIdx.push_back(k);
  }
  struct Item {
    size_t cell;
    const std::vector<size_t>* variants;
    bool last;   // completes the cell
    bool first;  // evaluates the first variants
  };
  std::vector<Item> items;
  const size_t split = !firstIdx.empty() && !restIdx.empty() ? std::min(cells.size(), kFirstPassCells) : 0;
  for (size_t i = 0; i < split; ++i) items.push_back({i, &firstIdx, false, true});
  for (size_t i = 0; i < split; ++i) items.push_back({i, &restIdx, true, false});
  for (size_t i = split; i < cells.size(); ++i) items.push_back({i, &allIdx, true, true});
  std::atomic<size_t> next{0};
  std::atomic<bool> cancel{false};
  std::mutex mutex;  // rows, counters, progress and partial calls
  std::exception_ptr failure;
  auto lastPartial = std::chrono::steady_clock::now() - std::chrono::hours(1);
  // polled inside the cells: asks the progress callback (the caller's Cancel) without waiting for the lock
  const std::function<bool()> stop = [&]() -> bool {
    if (cancel.load()) return true;
    if (!progress) return false;
    std::unique_lock<std::mutex> lock(mutex, std::try_to_lock);
    if (lock.owns_lock() && !cancel.load() && !progress(res.cellsDone, cells.size())) cancel.store(true);
    return cancel.load();
  };
  auto worker = [&](size_t, size_t) {
    for (size_t i = next++; i < items.size() && !cancel.load(); i = next++) {
      try {
        bool fallback = false;
        const Item& item = items[i];
        auto rows = evaluateCell(plan, cells[item.cell], *item.variants, backend, cancel, stop, &fallback);
        std::lock_guard<std::mutex> lock(mutex);
        if (cancel.load()) return;
        res.rows.insert(res.rows.end(), rows.begin(), rows.end());
        if (item.last) ++res.cellsDone;
        if (item.first) ++res.firstPassCells;
        if (fallback && item.last) ++res.cpuFallbackCells;
        if (progress && !progress(res.cellsDone, cells.size())) {
          cancel.store(true);
          return;
        }
        const auto now = std::chrono::steady_clock::now();
        if (partial.fn && res.cellsDone < cells.size() && now - lastPartial >= std::chrono::milliseconds(partial.intervalMs)) {
          SweepResult p = res;
          sortRows(p.rows);
          p.seconds = std::chrono::duration<double>(now - t0).count();
          partial.fn(p);
          lastPartial = std::chrono::steady_clock::now();
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failure) failure = std::current_exception();
        cancel.store(true);
      }
    }
  };
  // one cell per thread at a time; with a device backend the threads read the source and build the
  // queries while another thread's cell runs on the device (the backend serialises its device calls)
  const size_t threads = std::min(items.size(), static_cast<size_t>(std::max(1, cpuThreads())));
  parallelRanges(threads, 1, worker);
  if (failure) std::rethrow_exception(failure);
  res.cancelled = cancel.load();
  sortRows(res.rows);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  static const bool profile = std::getenv("TQ_SWEEP_PROFILE") != nullptr;
  if (profile) {
    CellProfile& cp = cellProfile();
    std::fprintf(stderr,
                 "sweep profile: %.3f s wall, %zu threads; summed over threads: cell preparation %.3f s, backend task %.3f s, rows %.3f s (%lld "
                 "tasks so far)\n",
                 res.seconds, threads, cp.prepUs.load() * 1e-6, cp.backendUs.load() * 1e-6, cp.rowsUs.load() * 1e-6,
                 static_cast<long long>(cp.cells.load()));
  }
  return res;
}

}  // namespace tq
