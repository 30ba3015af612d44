// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Fidelity curves: the aggregation of sweep rows (one per layer x query head) into one point per key
/// variant and metric, as the fidelity view draws them and the CLI summarises them. Partial results
/// (a progressive sweep that has visited some cells) aggregate the same way; the point then carries the
/// 95 % confidence band of the mean over the cells seen so far.
#include <string>
#include <vector>

#include "metrics/metrics.h"
#include "sweep/sweep.h"

namespace tq {

/// A metric the fidelity curves show.
struct CurveMetric {
  const char* title;   ///< e.g. "attention-weight cosine"
  const char* column;  ///< e.g. "attention_cosine" (the CSV column of core/explore/export)
  double (*get)(const AttentionMetrics&);
  bool logScale;
  bool higherIsBetter;
};
/// attention cosine, top-1, top-5, KL, raw-logit cosine, output error (the fidelity view's six panels).
const std::vector<CurveMetric>& curveMetrics();

struct CurvePoint {
  KeyVariant key;
  int valueBits = 0;
  size_t rows = 0;                ///< (layer, query head) rows aggregated
  double keyBytes = 0, valueBytes = 0;  ///< mean bytes per (token, kv head) of the rows (their ledgers)
  std::vector<double> mean, min, max, ci95;  ///< per curveMetrics() entry; ci95 = 1.96 sd / sqrt(rows) (0 for one row)
};

/// One point per (key variant, value bits) present in the rows, in the rows' order (method, mode, bits, m).
std::vector<CurvePoint> fidelityCurves(const SweepResult& r);

/// One configuration's metric on every (layer, query head) of a sweep: the layer x head map.
struct LayerHeadMap {
  std::vector<int> layers;       ///< the layers of the sweep's rows, ascending
  int heads = 0;                 ///< query heads (or proxy heads) per layer
  std::vector<double> value;     ///< layers.size() x heads, row-major; NaN where the cell is not (yet) measured
  std::vector<double> layerMean; ///< per layer: mean over its measured heads (NaN when none)
  size_t measured = 0;           ///< cells with a value
};
/// The rows of `key` (method, mode, bits, m) at `valueBits` (a method without value rows: valueBits 0).
LayerHeadMap layerHeadMap(const SweepResult& r, const KeyVariant& key, int valueBits, size_t metric);

/// Bytes per (token, kv head) that a point stores: keys + values (keys alone when the sweep had no values).
double pointBytes(const CurvePoint& p);
/// fp16's bytes for the same (token, kv head): 2 d (+ 2 dv with values).
double fp16PointBytes(const SweepResult& r);
/// The points (indices into pts) that no other point beats on both bytes (pointBytes, fewer) and the
/// curveMetrics()[metric] mean (better, as that metric counts better): ascending in bytes.
std::vector<size_t> paretoFrontier(const std::vector<CurvePoint>& pts, size_t metric);

}  // namespace tq
