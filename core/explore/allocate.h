// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Bit allocation on measured curves: per layer (or per layer and kv head) key and value bit-widths that
/// maximise a fidelity metric under an average budget, chosen greedily on the metric the sweep measured for
/// every width on those very heads. The plan's metric is then the measured one (each unit's rows at its
/// widths), not a model's prediction; uniform widths at the budget are measured the same way.
#include <string>
#include <vector>

#include "sweep/sweep.h"

namespace tq {

struct AllocationUnit {
  int layer = 0;
  int kvHead = -1;    ///< -1: every kv head of the layer
  int keyBits = 0, valueBits = 0;
  double keyMetric = 0;    ///< the chosen metric's mean over the unit's rows at its widths
  double outputError = 0;  ///< the output error's mean over the unit's rows at its widths (0 without values)
};

struct AllocationPlan {
  std::string metric;               ///< a curveMetrics() column, e.g. "attention_cosine"
  double budgetBits = 0;
  std::vector<AllocationUnit> units;
  double averageKeyBits = 0, averageValueBits = 0;  ///< over units (each unit holds the same number of vectors)
  double measuredMetric = 0;        ///< mean of the metric over every row at the plan's widths
  double measuredOutputError = 0;   ///< the same for the output error (values)
  /// Uniform widths at the budget, measured on the same rows (NaN when the budget is not a whole width:
  /// then uniformBelow / uniformAbove give floor(B) and ceil(B)).
  double uniformMetric = 0, uniformOutputError = 0;
  double uniformBelowMetric = 0, uniformAboveMetric = 0;
  bool values = false;              ///< value widths were allocated (the sweep had values)
};

/// Greedy allocation on the rows of r for one key variant family (method, mode, m: `family`'s bits are
/// ignored). Keys: start every unit at the smallest width and repeatedly give one more width to the unit
/// whose metric gains most per bit, while the average stays within budgetBits. Values (when r has them):
/// the same on the output error, with each unit's keys at their allocated width. r must hold every key
/// width x every value width of the family on the same cells. Throws std::invalid_argument naming what
/// is missing (an unknown metric, a family without rows, a budget outside the widths measured).
AllocationPlan allocateBits(const SweepResult& r, const KeyVariant& family, const std::string& metric, double budgetBits, bool perHead);

}  // namespace tq
