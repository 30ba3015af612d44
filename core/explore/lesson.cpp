// SPDX-License-Identifier: GPL-3.0-or-later
#include "explore/lesson.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <stdexcept>

#include "attention/attention.h"
#include "backend/centering.h"
#include "explore/curves.h"
#include "metrics/metrics.h"
#include "sweep/sweep.h"

namespace tq {

const std::vector<std::string>& lessonStepIds() {
  static const std::vector<std::string> ids = {"kv-cache", "outliers", "rotation", "codebook", "inner-products", "softmax", "keys-values", "choose"};
  return ids;
}

namespace {

/// printf-style formatting of the sentences' numbers.
template <typename... A>
std::string fmt(const char* f, A... a) {
  char buf[512];
  std::snprintf(buf, sizeof buf, f, a...);
  return buf;
}

/// f_d with d in subscript digits (f₁₂₈).
std::string fd(int d) {
  static const char* digits[] = {"₀", "₁", "₂", "₃", "₄", "₅", "₆", "₇", "₈", "₉"};
  std::string out = "f";
  for (char c : std::to_string(d)) out += digits[c - '0'];
  return out;
}

std::string bytesText(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt("%.2f GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt("%.1f MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt("%.1f KiB", b / 1024.0);
  return fmt("%.0f B", b);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double meanOf(const std::vector<double>& v) { return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }
double sdOf(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = meanOf(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

/// Per-channel RMS over the rows of x (n x d).
std::vector<double> channelRms(const float* x, size_t n, size_t d) {
  std::vector<double> r(d, 0.0);
  for (size_t t = 0; t < n; ++t)
    for (size_t j = 0; j < d; ++j) r[j] += static_cast<double>(x[t * d + j]) * x[t * d + j];
  for (double& v : r) v = std::sqrt(v / static_cast<double>(std::max<size_t>(1, n)));
  return r;
}

/// A uniform b-bit quantizer with one scale per vector (its absmax): 2^b levels evenly spaced over
/// [-max, max]. The relative error ||x - x_hat||^2 / ||x||^2 over the rows (what "naive" quantization does).
double uniformRelativeError(const float* x, size_t n, size_t d, int bits) {
  const double L = std::ldexp(1.0, bits) - 1;
  std::vector<float> rec(n * d);
  for (size_t t = 0; t < n; ++t) {
    double s = 0;
    for (size_t j = 0; j < d; ++j) s = std::max(s, static_cast<double>(std::fabs(x[t * d + j])));
    for (size_t j = 0; j < d; ++j) {
      if (s <= 0) {
        rec[t * d + j] = 0;
        continue;
      }
      const double step = 2 * s / L;
      const double q = std::clamp(std::nearbyint((x[t * d + j] + s) / step), 0.0, L);
      rec[t * d + j] = static_cast<float>(-s + q * step);
    }
  }
  return vectorMse(x, rec.data(), n, d);
}

/// The rows of the top `k` entries of v (their share of sum v^2).
double topShare(const std::vector<double>& rms, size_t k) {
  std::vector<double> e;
  for (double r : rms) e.push_back(r * r);
  const double total = std::accumulate(e.begin(), e.end(), 0.0);
  std::sort(e.begin(), e.end(), std::greater<double>());
  double top = 0;
  for (size_t i = 0; i < std::min(k, e.size()); ++i) top += e[i];
  return total > 0 ? top / total : 0;
}

LessonSeries series(const std::string& name, LessonSeries::Kind kind, LessonColor c, std::vector<double> x, std::vector<double> y = {}) {
  LessonSeries s;
  s.name = name;
  s.kind = kind;
  s.color = c;
  s.x = std::move(x);
  s.y = std::move(y);
  return s;
}

std::vector<double> iota(size_t n, double from = 0) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = from + static_cast<double>(i);
  return v;
}

/// A histogram of v over [lo, hi] in nb bins as a density (x: bin centres).
void histogram(const std::vector<double>& v, double lo, double hi, int nb, std::vector<double>& x, std::vector<double>& y) {
  x.assign(static_cast<size_t>(nb), 0.0);
  y.assign(static_cast<size_t>(nb), 0.0);
  const double w = (hi - lo) / nb;
  for (int b = 0; b < nb; ++b) x[static_cast<size_t>(b)] = lo + (b + 0.5) * w;
  if (v.empty() || w <= 0) return;
  for (double t : v) {
    const int b = static_cast<int>(std::floor((t - lo) / w));
    if (b >= 0 && b < nb) y[static_cast<size_t>(b)] += 1;
  }
  for (double& c : y) c /= static_cast<double>(v.size()) * w;
}

}  // namespace

Lesson computeLesson(const std::shared_ptr<const KvSource>& src, const std::vector<std::string>& tokens, const std::string& model,
                     const DetailConfig& cfg, Backend& be, const ProgressFn& progress) {
  const KvShape sh = src->shape();
  if (sh.layers <= 0 || sh.seq <= 0 || sh.headDim <= 0 || sh.kvHeads <= 0) throw std::invalid_argument("the data is empty");
  const int total = 10;
  auto step = [&](int done) {
    if (progress && !progress(static_cast<size_t>(done), total)) throw std::runtime_error("cancelled");
  };
  Lesson L;
  L.model = model;
  L.layer = cfg.layer;
  L.qHead = cfg.qHead;
  L.headDim = sh.headDim;
  L.tokens = sh.seq;
  L.bits = cfg.keyBits;
  L.backend = be.name();
  L.device = be.device();
  const int b = cfg.keyBits, d = sh.headDim;
  const size_t D = static_cast<size_t>(d), S = static_cast<size_t>(sh.seq);

  // The detail views' records of this head (how it works, distortion, estimator): the same numbers.
  // The lesson follows the selection, the quantizer and key centering; not the V3 options (protected
  // layers, the recent window) or A/B, so that every step describes the same configuration as its curves.
  DetailConfig dc = cfg;
  dc.keyMode = KeyMode::Prod;  // how it works compares MSE-only with MSE+QJL
  dc.compare = false;
  dc.protectLayers = 0;
  dc.recentWindow = 0;
  if (dc.projDim <= 0) dc.projDim = d;
  const DetailData det = computeDetailData(src, tokens, dc, PartHow | PartDistortion | PartEstimator, HeatRegion{}, be, progress);
  L.kvHead = det.kvHead;
  step(3);
  const std::string where = fmt("layer %d, kv head %d", cfg.layer, det.kvHead);
  const auto K = src->keys(cfg.layer, det.kvHead);
  if (K.size() != S * D) throw std::runtime_error("the keys of " + where + " have the wrong size");

  // One cell of the sweep: TurboQuant's two estimators and three baselines at every width, on this head.
  SweepConfig sc;
  sc.keyBits = {1, 2, 3, 4, 5, 6, 7, 8};
  sc.valueBits = sh.hasValues ? sc.keyBits : std::vector<int>{4};
  sc.modes = {KeyMode::Mse, KeyMode::Prod};
  sc.methods = {Method::Kivi, Method::IntRot, Method::Fp8E4M3};
  sc.projDims = {0};
  sc.layers = {cfg.layer};
  // the selected head's cell: a query head with the dump's queries, its kv head with a proxy (the sweep's
  // proxy heads are the kv heads)
  sc.qHeads = {cfg.queries == QuerySource::Dump ? cfg.qHead : det.kvHead};
  sc.queries = cfg.queries;
  sc.maxQueries = cfg.sweepQueries;
  sc.seed = cfg.seed;
  sc.rotation = cfg.rotation;
  sc.law = cfg.law;
  sc.centering = cfg.centering;
  sc.centerWindow = cfg.centerWindow;
  sc.orthogonalQjl = cfg.orthogonalQjl;
  sc.evaluateValues = sh.hasValues;
  const SweepResult sweep = runSweep(*src, sc, be, [&](size_t, size_t) { return !progress || progress(5, total); });
  const std::vector<CurvePoint> pts = fidelityCurves(sweep);
  step(6);
  // the point of (method, mode, bits) with values at the same width (keys' metrics do not depend on them)
  auto point = [&](Method m, KeyMode mode, int bits) -> const CurvePoint* {
    for (const auto& p : pts)
      if (p.key.method == m && p.key.mode == mode && p.key.bits == bits && (!sh.hasValues || p.valueBits == bits || p.valueBits == 0)) return &p;
    return nullptr;
  };
  const size_t mCos = 0, mOut = 5;

  // ---------------------------------------------------------------- 1 the KV cache
  {
    LessonStep s;
    s.id = "kv-cache";
    s.title = "1 · The KV cache and its memory";
    const long long ctx = 32768;
    MemoryConfig mc;
    mc.layers = sh.layers;
    mc.kvHeads = sh.kvHeads;
    mc.headDim = d;
    mc.tokens = ctx;
    LessonPanel p;
    p.title = fmt("KV cache of this dump's %d layers × %d kv heads at %lld tokens", sh.layers, sh.kvHeads, ctx);
    p.yLabel = "MiB";
    std::vector<double> y;
    double fp16 = 0, tq3 = 0, ratio3 = 0;
    p.xTicks = {"fp16", "fp8"};
    for (int bb : {4, 3, 2}) {
      mc.keyBits = mc.valueBits = bb;
      mc.keyMode = KeyMode::Prod;
      const MemoryReport r = memoryModel(mc);
      if (y.empty()) {
        fp16 = r.fp16Bytes;
        y.push_back(r.fp16Bytes / 1048576.0);
        y.push_back(r.fp8Bytes / 1048576.0);
      }
      y.push_back(r.totalBytes / 1048576.0);
      p.xTicks.push_back(fmt("TQ %d-bit", bb));
      if (bb == 3) tq3 = r.totalBytes, ratio3 = r.ratioVsFp16;
    }
    p.series.push_back(series("", LessonSeries::Bars, LessonColor::Prod, iota(y.size(), 1), y));
    s.panels.push_back(p);
    const double perToken = 2.0 * sh.layers * sh.kvHeads * d * 2.0;
    s.sentences.push_back(fmt("Attention keeps, for every token, a key and a value of d = %d numbers per layer and kv head: this dump has %d layers × %d kv heads, "
                              "so each token adds 2 × %d × %d × %d fp16 numbers = %s.",
                              d, sh.layers, sh.kvHeads, sh.layers, sh.kvHeads, d, bytesText(perToken).c_str()));
    s.sentences.push_back(fmt("At %lld tokens that is %s in fp16. TurboQuant at 3 bits (MSE+QJL, norms included) stores %s: %.1f× less.", ctx,
                              bytesText(fp16).c_str(), bytesText(tq3).c_str(), ratio3));
    s.sentences.push_back(fmt("The dump holds %d tokens. The next steps follow one head, %s, query head %d, through the algorithm and ask what the bytes saved cost.",
                              sh.seq, where.c_str(), cfg.qHead));
    L.steps.push_back(s);
  }

  // ---------------------------------------------------------------- 2 outliers
  const std::vector<double> rms = channelRms(K.data(), S, D);
  const size_t jMax = static_cast<size_t>(std::max_element(rms.begin(), rms.end()) - rms.begin());
  const double med = median(rms), outRatio = med > 0 ? rms[jMax] / med : 0;
  const double share4 = topShare(rms, 4);
  const double naive = uniformRelativeError(K.data(), S, D, b);
  Quantizer mq(cfg.keyConfig(KeyMode::Mse, b, d));
  std::vector<float> Y(S * D);
  mq.rotation().apply(K.data(), Y.data(), S);
  const std::vector<double> rmsRot = channelRms(Y.data(), S, D);
  const double medRot = median(rmsRot), outRatioRot = medRot > 0 ? *std::max_element(rmsRot.begin(), rmsRot.end()) / medRot : 0;
  const double naiveRot = uniformRelativeError(Y.data(), S, D, b);
  {
    LessonStep s;
    s.id = "outliers";
    s.title = "2 · Outlier channels in real keys";
    LessonPanel p;
    p.title = fmt("per-channel RMS of the keys, %s (%d tokens)", where.c_str(), sh.seq);
    p.xLabel = "channel";
    p.yLabel = "RMS over tokens";
    p.series.push_back(series("RMS", LessonSeries::Bars, LessonColor::Accent, iota(D), rms));
    p.series.push_back(series(fmt("median %.3g", med), LessonSeries::Dashed, LessonColor::Ink, {-0.5, d - 0.5}, {med, med}));
    s.panels.push_back(p);
    if (outRatio >= 3)
      s.sentences.push_back(fmt("Channel %zu has RMS %.3g, %.1f× the median channel (%.3g); the 4 largest of %d channels carry %.0f %% of the keys' energy.", jMax,
                                rms[jMax], outRatio, med, d, 100 * share4));
    else
      s.sentences.push_back(fmt("This head has no strong outlier channel: the largest (channel %zu, RMS %.3g) is %.1f× the median; the 4 largest of %d carry %.0f %% of the energy.",
                                jMax, rms[jMax], outRatio, d, 100 * share4));
    s.sentences.push_back(fmt("A uniform %d-bit quantizer with one scale per key spreads its %d levels over the largest coordinate, so the ordinary channels "
                              "fall into few levels: its relative error ‖k − k̂‖² / ‖k‖² on these keys is %.3g.",
                              b, 1 << b, naive));
    if (det.keyMeanShare > 0.5)
      s.sentences.push_back(fmt("Besides, %.1f %% of these keys' energy is their mean (a bias shared by every token): what distinguishes one token from another is small.",
                                100 * det.keyMeanShare));
    L.steps.push_back(s);
  }

  // ---------------------------------------------------------------- 3 rotation
  {
    LessonStep s;
    s.id = "rotation";
    s.title = "3 · A random rotation spreads the outliers";
    LessonPanel a;
    a.title = "per-channel RMS before and after the rotation";
    a.xLabel = "channel";
    a.yLabel = "RMS over tokens";
    a.series.push_back(series("before", LessonSeries::Bars, LessonColor::Grey, iota(D), rms));
    a.series.push_back(series("after (R k)", LessonSeries::Steps, LessonColor::Prod, iota(D), rmsRot));
    LessonPanel h;
    h.title = "rotated unit keys' coordinates vs the sphere marginal";
    h.xLabel = "coordinate of R k / ‖k‖";
    h.yLabel = "density";
    h.series.push_back(series("these keys", LessonSeries::Steps, LessonColor::Accent, det.how.histX, det.how.histDensity));
    h.series.push_back(series(fd(d) + " (random directions)", LessonSeries::Line, LessonColor::Ink, det.how.densityX, det.how.densityY));
    s.panels = {a, h};
    // How far the histogram is from f_d (total variation over the bins), and the keys' common direction
    double tv = 0;
    const double w = det.how.histX.size() > 1 ? det.how.histX[1] - det.how.histX[0] : 0;
    for (size_t i = 0; i < det.how.histX.size(); ++i) tv += 0.5 * std::fabs(det.how.histDensity[i] - sphereMarginalDensity(d, det.how.histX[i])) * w;
    std::vector<double> mu(D, 0.0);
    for (size_t t = 0; t < S; ++t) {
      double n = 0;
      for (size_t j = 0; j < D; ++j) n += static_cast<double>(K[t * D + j]) * K[t * D + j];
      n = std::sqrt(n);
      for (size_t j = 0; j < D; ++j) mu[j] += n > 0 ? K[t * D + j] / n / static_cast<double>(S) : 0;
    }
    double common = 0;
    for (double m : mu) common += m * m;
    s.sentences.push_back(fmt("After a random rotation R the largest channel's RMS is %.1f× the median (it was %.1f×): R spreads every key's energy over all %d coordinates.",
                              outRatioRot, outRatio, d));
    s.sentences.push_back(fmt("The same uniform %d-bit quantizer now has relative error %.3g (it was %.3g).", b, naiveRot, naive));
    if (common > 0.5)
      s.sentences.push_back(fmt("Each rotated key looks like a random direction (the histogram against %s: total variation %.2f), but these keys share one "
                                "direction (the mean of the unit keys has squared norm %.3f):%s only %.2g %% of the direction varies between tokens, "
                                "and %s of the codebook's resolution goes to what the tokens have in common.",
                                fd(d).c_str(), tv, common, common > 0.9 ? " every token's rotated coordinates are nearly the same;" : "", 100 * (1 - common),
                                common > 0.9 ? "almost all" : "much"));
    else
      s.sentences.push_back(fmt("For random directions each rotated coordinate follows %s, the sphere's marginal; on these keys the histogram is "
                                "%s it (total variation %.2f), which is what lets one fixed codebook serve every key.",
                                fd(d).c_str(), tv < 0.15 ? "close to" : "only roughly like", tv));
    L.steps.push_back(s);
  }

  // ---------------------------------------------------------------- 4 codebook and distortion
  {
    LessonStep s;
    s.id = "codebook";
    s.title = "4 · Lloyd-Max cells and the distortion bounds";
    LessonPanel a;
    a.title = fmt("the %d-bit codebook for %s: %d cells", b, fd(d).c_str(), 1 << b);
    a.xLabel = "rotated coordinate";
    a.yLabel = "density";
    a.series.push_back(series(fd(d), LessonSeries::Line, LessonColor::Ink, det.how.densityX, det.how.densityY));
    std::vector<double> cx, cy, bx;
    if (const Codebook* cb = mq.codebookPtr()) {
      for (double c : cb->centroids) cx.push_back(c), cy.push_back(sphereMarginalDensity(d, c));
      const double range = det.how.densityX.empty() ? 1.0 : det.how.densityX.back();
      for (double v : cb->boundaries)
        if (std::fabs(v) < range) bx.push_back(v);
    }
    a.series.push_back(series("centroids", LessonSeries::Points, LessonColor::Mse, cx, cy));
    a.series.push_back(series("cell boundaries", LessonSeries::VLine, LessonColor::Grey, bx));
    LessonPanel p;
    p.title = "vector distortion ‖x − x̂‖² / ‖x‖²";
    p.xLabel = "bits";
    p.yLabel = "distortion (log)";
    p.logY = true;
    const Distortion& dd = det.distortion;
    std::vector<double> bits(dd.bits.begin(), dd.bits.end());
    p.series.push_back(series("paper's upper bound", LessonSeries::Dashed, LessonColor::Grey, bits, dd.upper));
    p.series.push_back(series("paper's lower bound", LessonSeries::Dashed, LessonColor::Ink, bits, dd.lower));
    p.series.push_back(series("theory (Lloyd-Max on " + fd(d) + ")", LessonSeries::Line, LessonColor::Mse, bits, dd.theory));
    p.series.push_back(series("these keys", LessonSeries::Points, LessonColor::Accent, bits, dd.measuredData));
    p.series.push_back(series("random unit vectors", LessonSeries::Points, LessonColor::Prod, bits, dd.measuredSphere));
    s.panels = {a, p};
    const size_t i = static_cast<size_t>(std::clamp(b, 1, 8) - 1);
    s.sentences.push_back(fmt("Lloyd-Max places %d centroids where %s has its mass, each cell's centroid its conditional mean; a rotated coordinate is "
                              "stored as the index of its cell (%d bits).",
                              1 << b, fd(d).c_str(), b));
    if (i < dd.bits.size()) {
      const bool inside = dd.measuredData[i] <= dd.upper[i] && dd.measuredData[i] >= dd.lower[i];
      s.sentences.push_back(fmt("At %d bits: theory %.3g, random unit vectors %.3g, these keys %.3g, %s the paper's bounds [%.3g, %.3g].", b, dd.theory[i],
                                dd.measuredSphere[i], dd.measuredData[i], inside ? "inside" : "outside", dd.lower[i], dd.upper[i]));
      if (i + 1 < dd.bits.size() && dd.measuredData[i + 1] > 0)
        s.sentences.push_back(fmt("One more bit divides the keys' distortion by %.1f (the bounds: by 4).", dd.measuredData[i] / dd.measuredData[i + 1]));
    }
    L.steps.push_back(s);
  }

  // ---------------------------------------------------------------- 5 inner products over draws of S
  {
    LessonStep s;
    s.id = "inner-products";
    s.title = "5 · Inner products: the MSE shrink and QJL's correction";
    const HowItWorks& h = det.how;
    // many draws of the rotation and S for this one key (how it works shows a few): the seeds of the
    // detail view's trials, continued
    std::vector<double> trialsMse, trialsProd;
    {
      const int draws = d <= 128 ? 200 : d <= 256 ? 64 : 24;
      const std::vector<float> qv = queryVectors(*src, cfg.queries, cfg.seed, cfg.layer, cfg.qHead, K, {h.token});
      for (int first = 1; first <= draws; first += 40) {  // in chunks, a cancel check between them
        step(4);
        const int n = std::min(40, draws - first + 1);
        const auto a = estimatesOverSeeds(dc, KeyMode::Mse, b, d, h.x.data(), qv.data(), first, n);
        const auto c = estimatesOverSeeds(dc, KeyMode::Prod, b, d, h.x.data(), qv.data(), first, n);
        trialsMse.insert(trialsMse.end(), a.begin(), a.end());
        trialsProd.insert(trialsProd.end(), c.begin(), c.end());
      }
    }
    LessonPanel p;
    p.title = fmt("estimates of ⟨q, k⟩ for token %d over %zu draws of the rotation and S", h.token, trialsMse.size());
    p.xLabel = "estimate of ⟨q, k⟩";
    p.yLabel = "density";
    std::vector<double> all(trialsMse);
    all.insert(all.end(), trialsProd.begin(), trialsProd.end());
    all.push_back(h.truth);
    double lo = *std::min_element(all.begin(), all.end()), hi = *std::max_element(all.begin(), all.end());
    const double pad = 0.05 * std::max(1e-9, hi - lo);
    lo -= pad, hi += pad;
    std::vector<double> hx, hm, hp;
    histogram(trialsMse, lo, hi, 30, hx, hm);
    histogram(trialsProd, lo, hi, 30, hx, hp);
    p.series.push_back(series(fmt("MSE-only %d bits", b), LessonSeries::Steps, LessonColor::Mse, hx, hm));
    p.series.push_back(series(fmt("MSE+QJL %d bits", b), LessonSeries::Steps, LessonColor::Prod, hx, hp));
    p.series.push_back(series("true ⟨q, k⟩", LessonSeries::VLine, LessonColor::Accent, {h.truth}));
    s.panels.push_back(p);
    const double m1 = meanOf(trialsMse), m2 = meanOf(trialsProd), s1 = sdOf(trialsMse), s2 = sdOf(trialsProd);
    const double n = static_cast<double>(std::max<size_t>(1, trialsProd.size()));
    s.sentences.push_back(fmt("For token %d the true inner product with its query is %.4g. MSE-only estimates average %.4g (%.0f %% of it) with sd %.3g; "
                              "MSE+QJL estimates average %.4g with sd %.3g.",
                              h.token, h.truth, m1, h.truth != 0 ? 100 * m1 / h.truth : 0.0, s1, m2, s2));
    const bool unbiased = std::fabs(m2 - h.truth) <= 2 * s2 / std::sqrt(n);
    s.sentences.push_back(unbiased ? fmt("QJL's mean is within two standard errors of the truth: over draws of S it is unbiased, as the paper proves.")
                                   : fmt("Here QJL's mean misses the truth by %.3g, more than two standard errors (%.3g): unbiased on average over S does not hold "
                                         "for this key at these draws.",
                                         m2 - h.truth, 2 * s2 / std::sqrt(n)));
    const EstimatorSeries* em = nullptr;
    const EstimatorSeries* ep = nullptr;
    for (const auto& es : det.estimator) {
      if (es.mode == KeyMode::Mse) em = &es;
      if (es.mode == KeyMode::Prod) ep = &es;
    }
    if (em && ep)
      s.sentences.push_back(fmt("But one cache has one S. With the current seed, over all (query, key) pairs of this head: MSE-only slope %.3f, "
                                "MSE+QJL slope %.3f and error variance %.3g against %.3g.",
                                em->stats.slope, ep->stats.slope, ep->stats.variance, em->stats.variance));
    L.steps.push_back(s);
  }

  // ---------------------------------------------------------------- 6 softmax amplifies variance
  int mseWins = 0, widths = 0;
  {
    LessonStep s;
    s.id = "softmax";
    s.title = "6 · Softmax amplifies variance";
    LessonPanel p;
    p.title = fmt("attention-weight cosine on %s, query head %d", where.c_str(), cfg.qHead);
    p.xLabel = "key bits";
    p.yLabel = "attention-weight cosine";
    std::vector<double> bx, ym, yp;
    for (int bb = 1; bb <= 8; ++bb) {
      const CurvePoint* a = point(Method::TurboQuant, KeyMode::Mse, bb);
      const CurvePoint* c = point(Method::TurboQuant, KeyMode::Prod, bb);
      if (!a || !c) continue;
      bx.push_back(bb);
      ym.push_back(a->mean[mCos]);
      yp.push_back(c->mean[mCos]);
      ++widths;
      if (a->mean[mCos] >= c->mean[mCos]) ++mseWins;
    }
    p.series.push_back(series("MSE-only", LessonSeries::Line, LessonColor::Mse, bx, ym));
    p.series.push_back(series(fmt("MSE+QJL m=%d", d), LessonSeries::Line, LessonColor::Prod, bx, yp));
    s.panels.push_back(p);
    const CurvePoint* a = point(Method::TurboQuant, KeyMode::Mse, b);
    const CurvePoint* c = point(Method::TurboQuant, KeyMode::Prod, b);
    if (a && c) s.sentences.push_back(fmt("At %d bits on this head: MSE-only attention cosine %.3f, MSE+QJL %.3f.", b, a->mean[mCos], c->mean[mCos]));
    if (mseWins * 2 > widths)
      s.sentences.push_back(fmt("MSE-only is at least as good at %d of %d widths: the softmax exponentiates the logits, so QJL's extra variance costs more than "
                                "MSE's shrink, which scales all logits alike (like a slightly higher softmax temperature).",
                                mseWins, widths));
    else
      s.sentences.push_back(fmt("Here MSE+QJL is better at %d of %d widths: on this head MSE's bias costs more than QJL's variance, unlike the usual case.",
                                widths - mseWins, widths));
    s.sentences.push_back("At equal bits MSE+QJL gives one bit to the sketch, so its MSE stage has one bit less: the comparison is at equal bits per coordinate (MSE+QJL stores one more fp16 norm).");
    L.steps.push_back(s);
  }

  // ---------------------------------------------------------------- 7 keys versus values
  {
    LessonStep s;
    s.id = "keys-values";
    s.title = "7 · Keys versus values";
    LessonPanel p;
    p.title = fmt("output error ‖pV − p̂V̂‖ / ‖pV‖, %s, query head %d", where.c_str(), cfg.qHead);
    p.xLabel = "bits";
    p.yLabel = "output error (log)";
    p.logY = true;
    if (!sh.hasValues) {
      s.sentences.push_back("This dump has no values, so this step cannot compare them with the keys.");
    } else {
      // quantize only the keys (exact values) or only the values (exact keys), TurboQuant-MSE at each width
      const int dv = sh.headDimV > 0 ? sh.headDimV : d;
      const size_t DV = static_cast<size_t>(dv);
      const auto V = src->values(cfg.layer, det.kvHead);
      if (V.size() != S * DV) throw std::runtime_error("the values of " + where + " have the wrong size");
      const auto pos = evaluationPositions(cfg.queries, sh.seq, cfg.sweepQueries);
      const std::vector<float> Q = queryVectors(*src, cfg.queries, cfg.seed, cfg.layer, cfg.qHead, K, pos);
      const size_t nq = pos.size();
      const double scale = src->softmaxScale();
      std::vector<float> ex(nq * S), est(nq * S), khat(S * D), vhat(S * DV), o(DV), oh(DV);
      exactScores(Q.data(), nq, K.data(), S, D, ex.data());
      std::vector<double> pe(S), ph(S);
      std::vector<double> bx, ek, ev;
      for (int bb = 1; bb <= 8; ++bb) {
        step(7);
        QuantConfig kc = cfg.keyConfig(KeyMode::Mse, bb, d);
        Quantizer kq(kc);
        const CompressedVectors kcv = kq.compress(K.data(), S);
        kq.decompress(kcv, 0, S, khat.data());
        QuantConfig vc = kc;
        vc.dim = dv;
        vc.seed = layerSeed(cfg.seed, cfg.layer, true);
        Quantizer vq(vc);
        const CompressedVectors vcv = vq.compress(V.data(), S);
        vq.decompress(vcv, 0, S, vhat.data());
        exactScores(Q.data(), nq, khat.data(), S, D, est.data());
        double sk = 0, sv = 0;
        for (size_t i = 0; i < nq; ++i) {
          const size_t nn = static_cast<size_t>(pos[i]) + 1;
          softmax(ex.data() + i * S, nn, scale, pe.data());
          softmax(est.data() + i * S, nn, scale, ph.data());
          weightedValues(pe.data(), nn, V.data(), DV, o.data());
          weightedValues(ph.data(), nn, V.data(), DV, oh.data());
          sk += outputError(o.data(), oh.data(), DV);
          weightedValues(pe.data(), nn, vhat.data(), DV, oh.data());
          sv += outputError(o.data(), oh.data(), DV);
        }
        bx.push_back(bb);
        ek.push_back(sk / static_cast<double>(std::max<size_t>(1, nq)));
        ev.push_back(sv / static_cast<double>(std::max<size_t>(1, nq)));
      }
      p.series.push_back(series("keys quantized, values exact", LessonSeries::Line, LessonColor::Mse, bx, ek));
      p.series.push_back(series("values quantized, keys exact", LessonSeries::Line, LessonColor::Accent, bx, ev));
      const size_t i = static_cast<size_t>(std::clamp(b, 1, 8) - 1);
      s.sentences.push_back(fmt("TurboQuant-MSE at %d bits: quantizing only the keys gives output error %.3g, only the values %.3g. The vector distortion "
                                "is the same for both (the same quantizer); what differs is where the error goes.",
                                b, ek[i], ev[i]));
      int match = 0;
      for (size_t k = 0; k < ek.size(); ++k)
        if (ek[k] <= ev[i]) {
          match = static_cast<int>(bx[k]);
          break;
        }
      if (ek[i] > ev[i])
        s.sentences.push_back(match ? fmt("A key error moves every softmax weight exponentially, a value error is averaged by the weights: the keys need %d bits "
                                          "for the output error that %d-bit values give.",
                                          match, b)
                                    : fmt("A key error moves every softmax weight exponentially, a value error is averaged by the weights: even 8-bit keys do "
                                          "not reach the output error of %d-bit values here.",
                                          b));
      else
        s.sentences.push_back(fmt("On this head quantizing the values costs more than quantizing the keys at %d bits: the usual order (keys first) does not hold here.", b));
    }
    s.panels.push_back(p);
    L.steps.push_back(s);
  }

  // ---------------------------------------------------------------- 8 choosing a configuration
  {
    LessonStep s;
    s.id = "choose";
    s.title = "8 · Choosing a configuration: bytes versus fidelity";
    LessonPanel p;
    p.title = fmt("attention-weight cosine vs bytes per token and kv head (K+V), %s", where.c_str());
    p.xLabel = "bytes per token per kv head (keys + values)";
    p.yLabel = "attention-weight cosine";
    // the points with values at the keys' width (fp8: its own)
    std::vector<CurvePoint> sel;
    for (const auto& q : pts)
      if (!sh.hasValues || q.valueBits == q.key.bits || q.valueBits == 0) sel.push_back(q);
    struct Fam {
      Method m;
      KeyMode mode;
      const char* name;
      LessonColor c;
    };
    const Fam fams[] = {{Method::TurboQuant, KeyMode::Mse, "TurboQuant MSE-only", LessonColor::Mse},
                        {Method::TurboQuant, KeyMode::Prod, "TurboQuant MSE+QJL", LessonColor::Prod},
                        {Method::Kivi, KeyMode::Mse, "KIVI (G 32, R 128)", LessonColor::Kivi},
                        {Method::IntRot, KeyMode::Mse, "rotated int", LessonColor::IntRot},
                        {Method::Fp8E4M3, KeyMode::Mse, "fp8 e4m3", LessonColor::Fp8}};
    for (const Fam& f : fams) {
      std::vector<double> x, y;
      for (const auto& q : sel)
        if (q.key.method == f.m && q.key.mode == f.mode) x.push_back(pointBytes(q)), y.push_back(q.mean[mCos]);
      p.series.push_back(series(f.name, f.m == Method::Fp8E4M3 ? LessonSeries::Points : LessonSeries::Line, f.c, x, y));
    }
    const auto front = paretoFrontier(sel, mCos);
    std::vector<double> fx, fy;
    for (size_t k : front) fx.push_back(pointBytes(sel[k])), fy.push_back(sel[k].mean[mCos]);
    p.series.push_back(series("Pareto frontier", LessonSeries::Dashed, LessonColor::Ink, fx, fy));
    const double f16 = fp16PointBytes(sweep);
    p.series.push_back(series(fmt("fp16 (%.0f B)", f16), LessonSeries::VLine, LessonColor::Grey, {f16}));
    s.panels.push_back(p);
    auto label = [&](const CurvePoint& q) { return keyVariantLabel(q.key, sc.methodOptions); };
    const CurvePoint* best = nullptr;
    for (size_t k : front)
      if (sel[k].mean[mCos] >= 0.99) {
        best = &sel[k];
        break;
      }
    if (best)
      s.sentences.push_back(fmt("The cheapest configuration on this head with attention cosine ≥ 0.99 is %s at %.1f B per token and kv head, %.1f× less than fp16 (%.0f B).",
                                label(*best).c_str(), pointBytes(*best), f16 / pointBytes(*best), f16));
    else if (!front.empty())
      s.sentences.push_back(fmt("No configuration up to 8 bits reaches attention cosine 0.99 on this head; the best is %s with %.3f at %.1f B.",
                                label(sel[front.back()]).c_str(), sel[front.back()].mean[mCos], pointBytes(sel[front.back()])));
    if (const CurvePoint* a = point(Method::TurboQuant, KeyMode::Mse, b)) {
      const CurvePoint* k = point(Method::Kivi, KeyMode::Mse, b);
      s.sentences.push_back(k ? fmt("At %d bits: TurboQuant MSE-only %.3f at %.1f B, KIVI %.3f at %.1f B (its fp16 window and scales included).", b, a->mean[mCos],
                                    pointBytes(*a), k->mean[mCos], pointBytes(*k))
                              : fmt("At %d bits: TurboQuant MSE-only %.3f at %.1f B.", b, a->mean[mCos], pointBytes(*a)));
      if (sh.hasValues) s.sentences.back() += fmt(" Output error of TurboQuant MSE-only: %.3g.", a->mean[mOut]);
    }
    if (det.keyMeanShare > 0.5 && cfg.centering == KeyCentering::None)
      s.sentences.push_back(fmt("These keys are %.1f %% mean: centring them (Key centring: causal) changes this picture; try it.", 100 * det.keyMeanShare));
    else
      s.sentences.push_back("One head is one sample: the Fidelity view sweeps every layer and head, the Layers view shows which of them break.");
    L.steps.push_back(s);
  }
  step(total);
  return L;
}

}  // namespace tq
