// SPDX-License-Identifier: GPL-3.0-or-later
#include "explore/curves.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>

namespace tq {

const std::vector<CurveMetric>& curveMetrics() {
  static const std::vector<CurveMetric> m = {
      {"attention-weight cosine", "attention_cosine", [](const AttentionMetrics& a) { return a.attentionCosine; }, false, true},
      {"top-1 agreement", "top1", [](const AttentionMetrics& a) { return a.top1; }, false, true},
      {"top-5 recall", "top5", [](const AttentionMetrics& a) { return a.top5; }, false, true},
      {"KL(exact \u2016 TQ), nats (log)", "kl", [](const AttentionMetrics& a) { return a.kl; }, true, false},
      {"raw-logit cosine", "logit_cosine", [](const AttentionMetrics& a) { return a.logitCosine; }, false, true},
      {"output error \u2016pV \u2212 p\u0302V\u0302\u2016/\u2016pV\u2016", "output_error", [](const AttentionMetrics& a) { return a.outputError; }, false, false},
  };
  return m;
}

std::vector<CurvePoint> fidelityCurves(const SweepResult& r) {
  const auto& metrics = curveMetrics();
  const size_t nm = metrics.size();
  struct Acc {
    CurvePoint p;
    std::vector<double> s1, s2;
  };
  std::map<std::tuple<int, int, int, int, int>, Acc> acc;
  for (const SweepRow& row : r.rows) {
    auto& a = acc[std::make_tuple(static_cast<int>(row.key.method), static_cast<int>(row.key.mode), row.key.bits, row.key.projDim, row.valueBits)];
    if (a.p.rows == 0) {
      a.p.key = row.key;
      a.p.valueBits = row.valueBits;
      a.p.min.assign(nm, 1e300);
      a.p.max.assign(nm, -1e300);
      a.s1.assign(nm, 0.0);
      a.s2.assign(nm, 0.0);
    }
    ++a.p.rows;
    a.p.keyBytes += row.keyBytesPerVector;
    a.p.valueBytes += row.valueBytesPerVector;
    for (size_t i = 0; i < nm; ++i) {
      const double v = metrics[i].get(row.m);
      a.s1[i] += v;
      a.s2[i] += v * v;
      a.p.min[i] = std::min(a.p.min[i], v);
      a.p.max[i] = std::max(a.p.max[i], v);
    }
  }
  std::vector<CurvePoint> out;
  out.reserve(acc.size());
  for (auto& [k, a] : acc) {
    const double n = static_cast<double>(a.p.rows);
    a.p.keyBytes /= n;
    a.p.valueBytes /= n;
    a.p.mean.resize(nm);
    a.p.ci95.resize(nm);
    for (size_t i = 0; i < nm; ++i) {
      const double mu = a.s1[i] / n;
      const double var = a.p.rows > 1 ? std::max(0.0, (a.s2[i] - n * mu * mu) / (n - 1)) : 0.0;
      a.p.mean[i] = mu;
      a.p.ci95[i] = a.p.rows > 1 ? 1.96 * std::sqrt(var / n) : 0.0;
    }
    out.push_back(std::move(a.p));
  }
  return out;
}

LayerHeadMap layerHeadMap(const SweepResult& r, const KeyVariant& key, int valueBits, size_t metric) {
  const CurveMetric& cm = curveMetrics().at(metric);
  LayerHeadMap m;
  std::vector<int> layers;
  for (const SweepRow& row : r.rows) {
    layers.push_back(row.layer);
    m.heads = std::max(m.heads, row.qHead + 1);
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  m.layers = layers;
  m.value.assign(layers.size() * static_cast<size_t>(m.heads), std::numeric_limits<double>::quiet_NaN());
  for (const SweepRow& row : r.rows) {
    if (!(row.key == key) || row.valueBits != valueBits) continue;
    const size_t li = static_cast<size_t>(std::lower_bound(layers.begin(), layers.end(), row.layer) - layers.begin());
    double& v = m.value[li * static_cast<size_t>(m.heads) + static_cast<size_t>(row.qHead)];
    if (std::isnan(v)) ++m.measured;
    v = cm.get(row.m);
  }
  m.layerMean.assign(layers.size(), std::numeric_limits<double>::quiet_NaN());
  for (size_t li = 0; li < layers.size(); ++li) {
    double s = 0;
    int n = 0;
    for (int h = 0; h < m.heads; ++h) {
      const double v = m.value[li * static_cast<size_t>(m.heads) + static_cast<size_t>(h)];
      if (!std::isnan(v)) s += v, ++n;
    }
    if (n) m.layerMean[li] = s / n;
  }
  return m;
}

double pointBytes(const CurvePoint& p) { return p.keyBytes + p.valueBytes; }

double fp16PointBytes(const SweepResult& r) {
  const bool values = r.config.evaluateValues && std::any_of(r.rows.begin(), r.rows.end(), [](const SweepRow& row) { return row.valueBits > 0; });
  return 2.0 * r.headDim + (values ? 2.0 * (r.headDimV > 0 ? r.headDimV : r.headDim) : 0.0);
}

std::vector<size_t> paretoFrontier(const std::vector<CurvePoint>& pts, size_t metric) {
  const bool higher = curveMetrics().at(metric).higherIsBetter;
  auto better = [&](double a, double b) { return higher ? a > b : a < b; };
  std::vector<size_t> out;
  for (size_t i = 0; i < pts.size(); ++i) {
    const double bi = pointBytes(pts[i]), mi = pts[i].mean.at(metric);
    if (!std::isfinite(mi)) continue;
    bool dominated = false;
    for (size_t j = 0; j < pts.size() && !dominated; ++j) {
      if (j == i) continue;
      const double bj = pointBytes(pts[j]), mj = pts[j].mean.at(metric);
      if (!std::isfinite(mj)) continue;
      dominated = bj <= bi && !better(mi, mj) && (bj < bi || better(mj, mi));
    }
    if (!dominated) out.push_back(i);
  }
  std::sort(out.begin(), out.end(), [&](size_t a, size_t b) { return pointBytes(pts[a]) < pointBytes(pts[b]); });
  return out;
}

}  // namespace tq
