// SPDX-License-Identifier: GPL-3.0-or-later
#include "explore/detail.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "attention/attention.h"
#include "metrics/metrics.h"
#include "util/parallel.h"
#include "util/rng.h"

namespace tq {

QuantConfig DetailConfig::keyConfig(KeyMode mode, int bits, int d) const {
  QuantConfig c;
  c.dim = d;
  c.bits = bits;
  c.mode = mode;
  c.projDim = mode == KeyMode::Mse ? 0 : projDim;
  c.rotation = rotation;
  c.law = law;
  c.seed = layerSeed(seed, layer, false);
  c.orthogonalQjl = orthogonalQjl;
  return c;
}

const char* keyModeLabelText(KeyMode m) {
  switch (m) {
    case KeyMode::Mse:
      return "MSE-only";
    case KeyMode::Prod:
      return "MSE+QJL";
    default:
      return "QJL-only";
  }
}

std::string keyVariantLabel(const KeyVariant& v, const MethodOptions& opt) {
  std::string s = v.methodName();
  if (methodFixedBits(v.method) >= 8) return s;
  if (v.method == Method::TurboQuant && v.mode == KeyMode::QjlOnly) return s + " m=" + std::to_string(v.projDim);  // m sign bits, no width
  s += " " + std::to_string(v.method == Method::TqRef11 ? 1 : v.bits) + (v.bits == 1 || v.method == Method::TqRef11 ? " bit" : " bits");
  if (v.method == Method::TurboQuant && v.mode != KeyMode::Mse) s += " m=" + std::to_string(v.projDim);
  const std::string o = methodOptionsLabel(v.method, opt);
  if (!o.empty()) s += " " + o;
  return s;
}

/// Estimated scores for the views: on the CPU the dense form of the sweep (core/backend denseScores,
/// rows split over the cores), on a device its own scoring.
void viewScores(Backend& be, const Quantizer& q, const CompressedVectors& kc, const float* queries, size_t nq, float* out) {
  if (be.name() != "CPU") return be.scores(q, kc, queries, nq, out);
  const size_t d = static_cast<size_t>(q.dim());
  parallelRanges(nq, 64, [&](size_t b, size_t e) { denseScores(q, kc, queries + b * d, e - b, out + b * kc.count); });
}

std::vector<double> estimatesOverSeeds(const DetailConfig& e, KeyMode mode, int bits, int d, const float* x, const float* q, int first, int count) {
  std::vector<double> out(static_cast<size_t>(std::max(0, count)));
  parallelRanges(out.size(), 2, [&](size_t b, size_t en) {
    for (size_t i = b; i < en; ++i) {
      QuantConfig c = e.keyConfig(mode, bits, d);
      c.seed = c.seed + 7919ull * static_cast<uint64_t>(first + static_cast<int>(i));
      Quantizer tqz(c);
      const auto cv = tqz.compress(x, 1);
      const auto pq = tqz.prepare(q);
      float est = 0;
      tqz.scores(pq, cv, 0, 1, &est);
      out[i] = est;
    }
  });
  return out;
}

namespace {

/// Estimated scores (nq x S) of one key configuration for the query rows Q: what the heatmap shows.
using ScoreFn = std::function<void(const float* Q, size_t nq, float* out)>;

Heatmap computeHeat(const std::shared_ptr<const KvSource>& src, const DetailConfig& e, const HeatRegion& reg, const ScoreFn& scoreA,
                    const ScoreFn& scoreB, const std::vector<float>& K) {
  const KvShape shape = src->shape();
  const float scale = src->softmaxScale();
  const int seq = shape.seq, d = shape.headDim;
  Heatmap h;
  h.softmax = e.softmaxWeights;
  h.row0 = std::clamp(reg.row0, 0, seq - 1);
  h.row1 = reg.row1 < 0 ? seq : std::clamp(reg.row1, h.row0 + 1, seq);
  h.col0 = std::clamp(reg.col0, 0, seq - 1);
  h.col1 = reg.col1 < 0 ? seq : std::clamp(reg.col1, h.col0 + 1, seq);
  const int B = std::max(16, reg.maxBins);
  h.rowStride = (h.row1 - h.row0 + B - 1) / B;
  h.colStride = (h.col1 - h.col0 + B - 1) / B;
  h.rows = (h.row1 - h.row0 + h.rowStride - 1) / h.rowStride;
  h.cols = (h.col1 - h.col0 + h.colStride - 1) / h.colStride;
  const size_t D = static_cast<size_t>(d), S = static_cast<size_t>(seq), R = static_cast<size_t>(h.rows), C = static_cast<size_t>(h.cols);
  for (int i = 0; i < h.rows; ++i) h.rowToken.push_back(std::min(h.row1 - 1, h.row0 + i * h.rowStride + h.rowStride / 2));
  // The exact side (queries, exact softmax weights or scaled logits per row) does not depend on the
  // quantizer: kept for the last (data, head, query source, rows) so a bits change computes only the estimate.
  struct ExactRows {
    std::weak_ptr<const KvSource> src;  // weak: an address reused by a later data set never matches
    int layer = -1, qHead = -1, source = -1;
    uint64_t seed = 0;
    bool softmax = true;
    std::vector<int> rows;
    std::vector<float> Qr;
    std::vector<double> P;  // R x S
  };
  static std::mutex cacheMutex;
  static std::shared_ptr<const ExactRows> cache;
  const bool cacheable = R * S <= (size_t{4} << 20);
  std::shared_ptr<const ExactRows> exact;
  {
    std::lock_guard<std::mutex> lock(cacheMutex);
    if (cacheable && cache && !cache->src.expired() && cache->src.lock() == src && cache->layer == e.layer && cache->qHead == e.qHead &&
        cache->source == int(e.queries) && cache->seed == e.seed && cache->softmax == h.softmax && cache->rows == h.rowToken)
      exact = cache;
  }
  const bool kept = static_cast<bool>(exact);
  if (!exact) {
    auto x = std::make_shared<ExactRows>();
    x->src = src;
    x->layer = e.layer;
    x->qHead = e.qHead;
    x->source = int(e.queries);
    x->seed = e.seed;
    x->softmax = h.softmax;
    x->rows = h.rowToken;
    x->Qr = queryVectors(*src, e.queries, e.seed, e.layer, e.qHead, K, h.rowToken);
    std::vector<float> ex(R * S);
    exactScores(x->Qr.data(), R, K.data(), S, D, ex.data());
    x->P.assign(R * S, 0.0);
    parallelRanges(R, 16, [&](size_t r0, size_t r1) {
      for (size_t i = r0; i < r1; ++i) {
        const size_t n = static_cast<size_t>(h.rowToken[i]) + 1;
        if (h.softmax)
          softmax(ex.data() + i * S, n, scale, x->P.data() + i * S);
        else
          for (size_t k = 0; k < n; ++k) x->P[i * S + k] = static_cast<double>(scale) * ex[i * S + k];
      }
    });
    exact = x;
    std::lock_guard<std::mutex> lock(cacheMutex);
    cache = cacheable ? exact : nullptr;
  }
  static const bool profile = std::getenv("TQ_PROFILE") != nullptr;
  const auto th = std::chrono::steady_clock::now();
  auto lap = [&](const char* what) {
    if (profile)
      std::fprintf(stderr, "  heatmap %s at %.1f ms\n", what, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - th).count());
  };
  lap(kept ? "exact side (kept)" : "exact side (computed)");
  const bool ab = static_cast<bool>(scoreB);
  std::vector<float> ap(R * S), bp(ab ? R * S : 0);
  lap("buffers");
  scoreA(exact->Qr.data(), R, ap.data());
  if (ab) scoreB(exact->Qr.data(), R, bp.data());
  lap("estimated scores");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  h.exact.assign(R * C, nan);
  h.approx.assign(R * C, nan);
  h.diff.assign(R * C, nan);
  if (ab) {
    h.compare.assign(R * C, nan);
    h.diffAB.assign(R * C, nan);
  }
  // a key bin's value: max of the weights (softmax) or mean of the logits; a difference bin: the entry of
  // largest magnitude (softmax) or the mean
  auto pool = [&](const double* v, int b, int eEnd) {
    double a = h.softmax ? -1e300 : 0;
    for (int k = b; k < eEnd; ++k) a = h.softmax ? std::max(a, v[k]) : a + v[k];
    return static_cast<float>(h.softmax ? a : a / (eEnd - b));
  };
  auto poolDiff = [&](const double* x, const double* y, int b, int eEnd) {
    double df = 0;
    for (int k = b; k < eEnd; ++k) {
      const double dk = x[k] - y[k];
      if (!h.softmax)
        df += dk;
      else if (std::fabs(dk) > std::fabs(df))
        df = dk;
    }
    return static_cast<float>(h.softmax ? df : df / (eEnd - b));
  };
  // rows in parallel (their softmaxes dominate at long contexts); the mean cosines are summed in row order
  std::vector<double> rowCosA(R, 0.0), rowCosB(R, 0.0);
  parallelRanges(R, 16, [&](size_t r0, size_t r1) {
    std::vector<double> ph(S), pb(ab ? S : 0);
    for (size_t i = r0; i < r1; ++i) {
      const int t = h.rowToken[i];
      const size_t n = static_cast<size_t>(t) + 1;
      const double* p = exact->P.data() + i * S;
      auto weights = [&](const float* s, double* out) {
        if (h.softmax)
          softmax(s, n, scale, out);
        else
          for (size_t k = 0; k < n; ++k) out[k] = static_cast<double>(scale) * s[k];
      };
      weights(ap.data() + i * S, ph.data());
      if (ab) weights(bp.data() + i * S, pb.data());
      if (h.softmax) {
        rowCosA[i] = cosine(p, ph.data(), n);
        if (ab) rowCosB[i] = cosine(p, pb.data(), n);
      }
      for (size_t j = 0; j < C; ++j) {
        const int b = h.col0 + static_cast<int>(j) * h.colStride;
        const int eEnd = std::min({h.col1, b + h.colStride, t + 1});
        if (b >= eEnd) continue;
        h.exact[i * C + j] = pool(p, b, eEnd);
        h.approx[i * C + j] = pool(ph.data(), b, eEnd);
        h.diff[i * C + j] = poolDiff(ph.data(), p, b, eEnd);
        if (ab) {
          h.compare[i * C + j] = pool(pb.data(), b, eEnd);
          h.diffAB[i * C + j] = poolDiff(ph.data(), pb.data(), b, eEnd);
        }
      }
    }
  });
  lap("weights and bins");
  double cosA = 0, cosB = 0;
  for (size_t i = 0; i < R; ++i) cosA += rowCosA[i], cosB += rowCosB[i];
  const double nanD = std::numeric_limits<double>::quiet_NaN();
  h.cosineA = h.softmax && R ? cosA / static_cast<double>(R) : nanD;
  h.cosineB = h.softmax && R && ab ? cosB / static_cast<double>(R) : nanD;
  return h;
}

float dot(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

/// The detail views' compressed keys, kept for the last few (data set, layer, kv head, centering, key
/// quantizer, backend): a change back to a configuration seen before (bits 3 -> 4 -> 3, a mode flip) does not
/// compress the head again. Bounded in bytes and entries; least recently used first out. Compression is
/// deterministic (CPU and GPU write the same bytes), so a kept buffer is the buffer a new compression writes.
class CompressedKeysCache {
 public:
  static CompressedKeysCache& instance() {
    static CompressedKeysCache c;
    return c;
  }
  /// The compressed keys Kq (S x d) of `q`; `hit` tells whether they came from the cache.
  std::shared_ptr<const CompressedVectors> get(const std::shared_ptr<const KvSource>& src, int layer, int kvHead, const DetailConfig& e,
                                               const Quantizer& q, Backend& be, const float* Kq, size_t S, bool* hit) {
    static const bool off = [] {
      const char* v = std::getenv("TQ_DETAIL_KEY_CACHE");
      return v && std::string(v) == "0";
    }();  // TQ_DETAIL_KEY_CACHE=0: every job compresses (the benchmark's baseline)
    if (off) {
      auto cv = std::make_shared<CompressedVectors>();
      be.compress(q, Kq, S, *cv);
      if (hit) *hit = false;
      return cv;
    }
    Key k{layer, kvHead, int(e.centering), e.centering == KeyCentering::None ? 0 : e.centerWindow, q.contentHash(), be.name() + " " + be.device()};
    {
      std::lock_guard<std::mutex> lock(m_mutex);
      for (auto it = m_entries.begin(); it != m_entries.end(); ++it) {
        if (it->src.expired() || it->src.lock() != src || !(it->key == k)) continue;
        auto cv = it->cv;
        m_entries.splice(m_entries.begin(), m_entries, it);  // most recently used first
        if (hit) *hit = true;
        return cv;
      }
    }
    auto cv = std::make_shared<CompressedVectors>();
    be.compress(q, Kq, S, *cv);
    if (hit) *hit = false;
    const size_t bytes = cv->bytes();
    std::lock_guard<std::mutex> lock(m_mutex);
    m_entries.push_front({src, k, cv, bytes});
    size_t total = 0, n = 0;
    for (auto it = m_entries.begin(); it != m_entries.end();) {
      total += it->bytes;
      ++n;
      // the newest entry always stays; a dropped data set's entries go at once
      if (n > 1 && (it->src.expired() || total > kMaxBytes || n > kMaxEntries)) {
        total -= it->bytes;
        --n;
        it = m_entries.erase(it);
      } else {
        ++it;
      }
    }
    return cv;
  }

 private:
  static constexpr size_t kMaxBytes = size_t{256} << 20, kMaxEntries = 48;
  struct Key {
    int layer, kvHead, centering, window;
    uint64_t quantizer;
    std::string backend;
    bool operator==(const Key& o) const {
      return layer == o.layer && kvHead == o.kvHead && centering == o.centering && window == o.window && quantizer == o.quantizer && backend == o.backend;
    }
  };
  struct Entry {
    std::weak_ptr<const KvSource> src;  // weak: an address reused by a later data set never matches
    Key key;
    std::shared_ptr<const CompressedVectors> cv;
    size_t bytes;
  };
  std::mutex m_mutex;
  std::list<Entry> m_entries;
};

}  // namespace

DetailData computeDetailData(const std::shared_ptr<const KvSource>& src, const std::vector<std::string>& tokens, const DetailConfig& config,
                             int parts, const HeatRegion& region, Backend& be, const ProgressFn& progress,
                             const std::function<void(const DetailData&)>& partial) {
  const auto t0 = std::chrono::steady_clock::now();
  const KvShape sh = src->shape();
  // a protected layer (SweepConfig::protectLayers) shows its protected widths, as in the sweep
  DetailConfig e = config;
  if (isProtectedLayer(e.protectLayers, e.layer, sh.layers)) e.keyBits = e.valueBits = e.protectBits;
  if (sh.layers <= 0 || sh.seq <= 0 || sh.headDim <= 0 || sh.kvHeads <= 0) throw std::invalid_argument("the data is empty");
  if (e.layer < 0 || e.layer >= sh.layers) throw std::invalid_argument("layer " + std::to_string(e.layer) + " out of range");
  if (e.qHead < 0 || e.qHead >= std::max(sh.qHeads, sh.kvHeads)) throw std::invalid_argument("head " + std::to_string(e.qHead) + " out of range");
  DetailData out;
  out.parts = parts;
  out.headDim = sh.headDim;
  out.kvHead = std::min(sh.kvHeadOf(e.qHead), sh.kvHeads - 1);
  out.queryLabel = querySourceLabel(e.queries);
  out.backend = be.name();
  out.device = be.device();
  const int seq = sh.seq, d = sh.headDim;
  const size_t D = static_cast<size_t>(d), S = static_cast<size_t>(seq);
  const auto K = src->keys(e.layer, out.kvHead);
  if (K.size() != S * D) throw std::runtime_error("the keys of layer " + std::to_string(e.layer) + " have the wrong size");
  const int qpos = e.queryPos < 0 || e.queryPos >= seq ? seq - 1 : e.queryPos;
  out.queryToken = qpos;
  // As in the sweep: a key whose norm its fp16 norm cannot hold is refused, naming the head.
  requireStorableNorms(K.data(), S, D, "keys of layer " + std::to_string(e.layer) + ", kv head " + std::to_string(out.kvHead));
  out.keyMeanShare = meanEnergyShare(K.data(), S, D);
  // Key centering: every quantizer of the views sees Kq = K - mu; scores get <q, mu> back (and the window's
  // exact scores); exact sides use K.
  const CentredKeys centred = centreKeys(K.data(), S, D, e.centering, e.centerWindow);
  const std::vector<float>& Kq = centred.active() ? centred.keys : K;
  static const bool profile = std::getenv("TQ_PROFILE") != nullptr;
  int posted = 0;  // parts already delivered as partial results
  auto deliver = [&](int part) {
    if (!partial || !(parts & part)) return;
    DetailData p;
    p.parts = part;
    p.kvHead = out.kvHead;
    p.headDim = out.headDim;
    p.queryToken = out.queryToken;
    p.queryLabel = out.queryLabel;
    p.backend = out.backend;
    p.device = out.device;
    p.keyBytesPerVector = out.keyBytesPerVector;
    p.valueBytesPerVector = out.valueBytesPerVector;
    p.keyMeanShare = out.keyMeanShare;
    p.keyBytesCentred = out.keyBytesCentred;
    p.keysFromCache = out.keysFromCache;
    p.keysCompressed = out.keysCompressed;
    if (part == PartHeatmap) p.heat = out.heat;
    if (part == PartEstimator) p.estimator = out.estimator;
    if (part == PartHow) p.how = out.how;
    p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    partial(p);
    posted |= part;
  };
  // a superseded job (the user changed something meanwhile) stops within one short step
  size_t lastStep = 0;
  auto checkCancel = [&] {
    if (progress && !progress(lastStep, 5)) throw std::runtime_error("cancelled");
  };
  auto step = [&](size_t done) {
    lastStep = done;
    if (profile)
      std::fprintf(stderr, "  detail step %zu at %.1f ms\n", done,
                   std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (progress && !progress(done, 5)) throw std::runtime_error("cancelled");
  };

  // Current-mode keys: heatmap, measured bytes, "how it works".
  Quantizer kq(e.keyConfig(e.keyMode, e.keyBits, d));
  bool hit = false;
  const auto kcvPtr = CompressedKeysCache::instance().get(src, e.layer, out.kvHead, e, kq, be, Kq.data(), S, &hit);
  const CompressedVectors& kcv = *kcvPtr;
  out.keysFromCache += hit ? 1 : 0;
  out.keysCompressed += hit ? 0 : 1;
  out.keyBytesPerVector = kcv.count ? kcv.bytes() / kcv.count : 0;
  // the recent fp16 window (after centering's first-token window)
  const size_t recent = std::min(static_cast<size_t>(std::max(0, e.recentWindow)), S - std::min(S, centred.window));
  out.keyBytesCentred = centredKeyBytes(static_cast<double>(out.keyBytesPerVector), S, D, centred, recent);
  if (sh.hasValues) {
    const int dv = sh.headDimV > 0 ? sh.headDimV : d;
    QuantConfig vc;
    vc.dim = dv;
    vc.bits = e.valueBits;
    vc.mode = KeyMode::Mse;
    vc.rotation = e.rotation;
    vc.law = e.law;
    vc.seed = layerSeed(e.seed, e.layer, true);
    Quantizer vq(vc);
    const auto V = src->values(e.layer, out.kvHead);
    if (V.size() == S * static_cast<size_t>(dv)) {
      // the bytes held per value vector, measured on the first vectors (TurboQuant stores the same bytes for
      // every vector; compressing the whole head only for this number delayed the heatmap by ~6 ms on 2 cores)
      const size_t nv = std::min<size_t>(S, 64);
      CompressedVectors vcv;
      be.compress(vq, V.data(), nv, vcv);
      out.valueBytesPerVector = vcv.count ? vcv.bytes() / vcv.count : 0;
    }
  }
  step(1);
  if (parts & PartHeatmap) {
    const ScoreFn scoreA = [&](const float* Q, size_t nq, float* o) {
      viewScores(be, kq, kcv, Q, nq, o);
      uncentreScores(centred, Q, nq, K.data(), S, D, o);
      exactRecentScores(recent, Q, nq, K.data(), S, D, o);
    };
    ScoreFn scoreB;
    KeyVariant va{e.keyMode, e.keyBits, e.keyMode == KeyMode::Mse ? 0 : kq.projDim(), Method::TurboQuant};
    double bytesB = 0;
    if (e.compare) {
      // B: the sweep's coder of that variant in this layer (core/sweep makeVariantCoder)
      SweepConfig sc;
      sc.rotation = e.rotation;
      sc.law = e.law;
      sc.seed = e.seed;
      sc.orthogonalQjl = e.orthogonalQjl;
      sc.methodOptions = e.methodOptions;
      sc.protectLayers = e.protectLayers;
      sc.protectBits = e.protectBits;
      KeyVariant vb = e.compareKey;
      if (vb.method == Method::TurboQuant && vb.mode != KeyMode::Mse && vb.projDim <= 0) vb.projDim = d;
      if (vb.method == Method::TqRef11) vb = {KeyMode::Prod, 1, d, Method::TqRef11};
      if (methodFixedBits(vb.method) >= 8) vb.bits = methodFixedBits(vb.method);
      const VariantCoder coder = makeVariantCoder(sc, vb.method, vb.mode, vb.bits, vb.projDim, false, e.layer, sh.layers, d);
      auto khat = std::make_shared<std::vector<float>>();
      auto bq = std::make_shared<CompressedVectors>();
      const size_t w0 = std::min(centred.window, S), nc = S - w0 - recent;
      double compressed = 0;
      if (coder.quantizer) {
        be.compress(*coder.quantizer, Kq.data(), S, *bq);
        compressed = bq->count ? static_cast<double>(bq->bytes()) / static_cast<double>(bq->count) : 0;
      } else {
        // a codec sees the tokens a cache would store it for (not the exact windows), as in the sweep
        khat->assign(Kq.begin(), Kq.end());
        if (nc > 0) {
          const EncodedMatrix enc = coder.codec->encode(Kq.data() + w0 * D, nc, D);
          coder.codec->decode(enc, khat->data() + w0 * D);
          compressed = static_cast<double>(enc.bytes()) / static_cast<double>(nc);
        }
      }
      bytesB = centredKeyBytes(compressed, S, D, centred, recent);
      scoreB = [&, coder, khat, bq](const float* Q, size_t nq, float* o) {
        if (coder.quantizer)
          viewScores(be, *coder.quantizer, *bq, Q, nq, o);
        else
          exactScores(Q, nq, khat->data(), S, D, o);  // <q, k_hat> of the decoded buffers
        uncentreScores(centred, Q, nq, K.data(), S, D, o);
        exactRecentScores(recent, Q, nq, K.data(), S, D, o);
      };
      out.heat.labelB = keyVariantLabel(vb, e.methodOptions);
    }
    const std::string labelB = out.heat.labelB;
    out.heat = computeHeat(src, e, region, scoreA, scoreB, K);
    out.heat.labelA = keyVariantLabel(va, e.methodOptions);
    out.heat.labelB = labelB;
    out.heat.keyBytesA = out.keyBytesCentred;
    out.heat.keyBytesB = bytesB;
  }
  step(2);
  deliver(PartHeatmap);

  // Every key mode at the current bits (estimator, how it works).
  struct ModeData {
    KeyMode mode;
    std::unique_ptr<Quantizer> q;
    std::shared_ptr<const CompressedVectors> cv;
  };
  std::vector<ModeData> modes;
  if (parts & (PartEstimator | PartHow)) {
    for (KeyMode m : {KeyMode::Mse, KeyMode::Prod, KeyMode::QjlOnly}) {
      checkCancel();
      ModeData md{m, std::make_unique<Quantizer>(e.keyConfig(m, e.keyBits, d)), {}};
      md.cv = CompressedKeysCache::instance().get(src, e.layer, out.kvHead, e, *md.q, be, Kq.data(), S, &hit);
      out.keysFromCache += hit ? 1 : 0;
      out.keysCompressed += hit ? 0 : 1;
      modes.push_back(std::move(md));
    }
  }
  if (parts & PartEstimator) {
    // the positions and query vectors of the fidelity sweep (core/data/queries)
    const auto pos = evaluationPositions(e.queries, seq, e.sweepQueries);
    const std::vector<float> qs = queryVectors(*src, e.queries, e.seed, e.layer, e.qHead, K, pos);
    // Bounded at any size: at most estimatorPairs (query, key) pairs per mode, every stride-th causal pair
    // in (query, key) order (all of them below that: 32 queries x 8192 tokens is 131 k pairs); the scores in
    // chunks of 64 queries (one chunk at the default 32)
    size_t total = 0;
    for (int p : pos) total += static_cast<size_t>(p) + 1;
    const size_t budget = std::max<size_t>(1, e.estimatorPairs);
    const size_t stride = std::max<size_t>(1, (total + budget - 1) / budget);
    const size_t nq = pos.size(), chunk = 64;
    for (const auto& md : modes) {
      EstimatorSeries s;
      s.mode = md.mode;
      s.label = keyModeLabelText(md.mode) + (md.mode == KeyMode::Mse ? "" : " m=" + std::to_string(e.projDim));
      s.pairsTotal = total;
      s.stride = stride;
      s.exact.reserve(total / stride + 1);
      s.estimate.reserve(total / stride + 1);
      out.estimator.push_back(std::move(s));
    }
    std::vector<float> exact(std::min(chunk, nq) * S), est(std::min(chunk, nq) * S);
    size_t g0 = 0;  // the causal pair index at the chunk's first query
    for (size_t c0 = 0; c0 < nq; c0 += chunk) {
      const size_t nb = std::min(chunk, nq - c0);
      const float* qc = qs.data() + c0 * D;
      exactScores(qc, nb, K.data(), S, D, exact.data());
      size_t g = g0;
      for (size_t mi = 0; mi < modes.size(); ++mi) {
        checkCancel();
        const auto& md = modes[mi];
        EstimatorSeries& s = out.estimator[mi];
        viewScores(be, *md.q, *md.cv, qc, nb, est.data());
        checkCancel();  // a superseded job stops within a few milliseconds (the next job's heatmap waits for it)
        uncentreScores(centred, qc, nb, K.data(), S, D, est.data());
        exactRecentScores(recent, qc, nb, K.data(), S, D, est.data());
        g = g0;
        for (size_t i = 0; i < nb; ++i)
          for (int k = 0; k <= pos[c0 + i]; ++k, ++g)
            if (g % stride == 0) {
              s.exact.push_back(exact[i * S + static_cast<size_t>(k)]);
              s.estimate.push_back(est[i * S + static_cast<size_t>(k)]);
            }
      }
      g0 = g;
    }
    for (auto& s : out.estimator) {
      std::vector<double> a(s.exact.begin(), s.exact.end()), b(s.estimate.begin(), s.estimate.end());
      innerProductStats(a.data(), b.data(), a.size(), s.stats);
    }
  }
  step(3);
  deliver(PartEstimator);
  if (parts & PartHow) {
    HowItWorks& h = out.how;
    h.token = qpos;
    h.kvHead = out.kvHead;
    h.tokenText = qpos >= 0 && static_cast<size_t>(qpos) < tokens.size() ? tokens[static_cast<size_t>(qpos)] : "#" + std::to_string(qpos);
    h.dim = d;
    h.mode = e.keyMode;
    h.mseBits = kq.mseBits();
    h.projDim = kq.projDim();
    // The key the quantizer sees (centred: x - mu, and <q, x - mu> is what its estimates are compared with).
    h.centred = centred.active();
    const float* x = Kq.data() + static_cast<size_t>(qpos) * D;
    const std::vector<float> qv = queryVectors(*src, e.queries, e.seed, e.layer, e.qHead, K, {qpos});
    const float* q = qv.data();
    h.x.assign(x, x + D);
    h.xMse.assign(D, 0.0f);
    kq.decompress(kcv, static_cast<size_t>(qpos), 1, h.xMse.data());
    std::vector<uint8_t> idx(D);
    h.signs.assign(static_cast<size_t>(std::max(0, h.projDim)), 0.0f);
    kq.unpack(kcv, static_cast<size_t>(qpos), idx.data(), h.signs.empty() ? nullptr : h.signs.data(), &h.norm, &h.residualNorm);
    if (h.projDim == 0) h.signs.clear();
    h.norm = std::sqrt(dot(x, x, D));
    std::vector<float> u(D);
    for (size_t j = 0; j < D; ++j) u[j] = h.norm > 0 ? x[j] / h.norm : 0.0f;
    h.rotated.assign(D, 0.0f);
    kq.rotation().apply(u.data(), h.rotated.data(), 1);
    if (const auto* cb = kq.codebookPtr()) {
      h.centroids = cb->centroids;
      h.boundaries = cb->boundaries;
      for (size_t j = 0; j < D; ++j) {
        h.codeIndex.push_back(idx[j]);
        h.codeValue.push_back(static_cast<float>(cb->centroids[idx[j]]));
      }
    }
    h.residual.resize(D);
    for (size_t j = 0; j < D; ++j) h.residual[j] = x[j] - h.xMse[j];
    h.residualNorm = std::sqrt(dot(h.residual.data(), h.residual.data(), D));
    // rotated coordinates of every key of this head, and the sphere marginal
    const double range = std::min(1.0, 5.0 / std::sqrt(static_cast<double>(d)));
    const int nb = 40;
    std::vector<float> U(K.size()), Y(K.size());
    for (size_t t = 0; t < S; ++t) {
      const float nn = std::sqrt(dot(Kq.data() + t * D, Kq.data() + t * D, D));
      for (size_t j = 0; j < D; ++j) U[t * D + j] = nn > 0 ? Kq[t * D + j] / nn : 0.0f;
    }
    checkCancel();
    kq.rotation().apply(U.data(), Y.data(), S);
    checkCancel();
    std::vector<double> cnt(nb, 0.0);
    for (float y : Y) {
      const int b = static_cast<int>(std::floor((y + range) / (2 * range) * nb));
      if (b >= 0 && b < nb) cnt[static_cast<size_t>(b)] += 1;
    }
    const double w = 2 * range / nb;
    for (int b = 0; b < nb; ++b) {
      h.histX.push_back(-range + (b + 0.5) * w);
      h.histDensity.push_back(cnt[static_cast<size_t>(b)] / (static_cast<double>(Y.size()) * w));
    }
    for (int i = 0; i <= 200; ++i) {
      const double t = -range + 2 * range * i / 200.0;
      h.densityX.push_back(t);
      h.densityY.push_back(sphereMarginalDensity(d, t));
    }
    // estimates of <q, x> for this one vector: current seed and independent seeds
    h.truth = dot(q, x, D);
    // MSE-only against the current mode (MSE+QJL when the current mode is MSE-only itself)
    h.compareMode = e.keyMode == KeyMode::Mse ? KeyMode::Prod : e.keyMode;
    for (const auto& md : modes) {
      if (md.mode != KeyMode::Mse && md.mode != h.compareMode) continue;
      const auto pq = md.q->prepare(q);
      float s = 0;
      md.q->scores(pq, *md.cv, static_cast<size_t>(qpos), 1, &s);
      (md.mode == KeyMode::Mse ? h.estimateMse : h.estimateProd) = s;
    }
    const int trials = d <= 16 ? 128 : d <= 64 ? 48 : 24;
    checkCancel();
    h.trialsMse = estimatesOverSeeds(e, KeyMode::Mse, e.keyBits, d, x, q, 1, trials);
    checkCancel();
    h.trialsProd = estimatesOverSeeds(e, h.compareMode, e.keyBits, d, x, q, 1, trials);
  }
  step(4);
  deliver(PartHow);
  if (parts & PartDistortion) {
    Distortion& dd = out.distortion;
    dd.dim = d;
    const size_t nSphere = kDistortionSphere;
    std::vector<float> sphere(nSphere * D);
    for (size_t i = 0; i < nSphere; ++i) {
      double s = 0;
      for (size_t j = 0; j < D; ++j) {
        sphere[i * D + j] = static_cast<float>(standardNormal(e.seed ^ 0x5bd1e995ull, kStreamValidate + 77, i * D + j));
        s += static_cast<double>(sphere[i * D + j]) * sphere[i * D + j];
      }
      for (size_t j = 0; j < D; ++j) sphere[i * D + j] /= static_cast<float>(std::sqrt(s));
    }
    // at most kDistortionKeys keys of the head, evenly spaced
    const size_t nk = std::min(S, kDistortionKeys);
    std::vector<float> Ks(nk * D);
    for (size_t i = 0; i < nk; ++i) {
      const size_t t = nk == S ? i : i * S / nk;
      std::copy_n(Kq.begin() + static_cast<long>(t * D), D, Ks.begin() + static_cast<long>(i * D));
    }
    dd.dataVectors = nk;
    dd.headVectors = S;
    std::vector<float> rec(Ks.size()), recS(sphere.size());
    for (int b = 1; b <= 8; ++b) {
      if (progress && !progress(4, 5)) throw std::runtime_error("cancelled");
      Quantizer mq(e.keyConfig(KeyMode::Mse, b, d));
      CompressedVectors cv, cvs;
      be.compress(mq, Ks.data(), nk, cv);
      be.decompress(mq, cv, rec.data());
      be.compress(mq, sphere.data(), nSphere, cvs);
      be.decompress(mq, cvs, recS.data());
      dd.bits.push_back(b);
      dd.theory.push_back(theoryDistortion(d, b, e.law));
      dd.upper.push_back(paperUpperBound(b));
      dd.lower.push_back(paperLowerBound(b));
      dd.measuredData.push_back(vectorMse(Ks.data(), rec.data(), nk, D));
      dd.measuredSphere.push_back(vectorMse(sphere.data(), recS.data(), nSphere, D));
    }
  }
  step(5);
  out.parts &= ~posted;  // the rest (the parts delivered early are not applied twice)
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace tq
