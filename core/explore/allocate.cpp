// SPDX-License-Identifier: GPL-3.0-or-later
#include "explore/allocate.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>

#include "explore/curves.h"

namespace tq {

namespace {
struct Cell {
  double metric = 0, outputError = 0;
  size_t rows = 0;
};
}  // namespace

AllocationPlan allocateBits(const SweepResult& r, const KeyVariant& family, const std::string& metric, double budgetBits, bool perHead) {
  const auto& metrics = curveMetrics();
  size_t mi = metrics.size();
  for (size_t i = 0; i < metrics.size(); ++i)
    if (metric == metrics[i].column) mi = i;
  if (mi == metrics.size() || metric == "output_error") {
    std::string names;
    for (const auto& m : metrics)
      if (std::string(m.column) != "output_error") names += (names.empty() ? "" : ", ") + std::string(m.column);
    throw std::invalid_argument("the metric to allocate keys on must be one of " + names + " (values are allocated on the output error), got '" + metric + "'");
  }
  const CurveMetric& cm = metrics[mi];
  const double sign = cm.higherIsBetter ? 1.0 : -1.0;
  auto same = [&](const KeyVariant& k) { return k.method == family.method && k.mode == family.mode && k.projDim == family.projDim; };

  // (unit, key bits, value bits) -> sums over the unit's rows
  using Unit = std::pair<int, int>;
  std::map<Unit, std::map<int, std::map<int, Cell>>> table;
  std::set<int> keyWidths, valueWidths;
  bool values = false;
  for (const SweepRow& row : r.rows) {
    if (!same(row.key)) continue;
    Cell& c = table[{row.layer, perHead ? row.kvHead : -1}][row.key.bits][row.valueBits];
    c.metric += cm.get(row.m);
    c.outputError += row.m.outputError;
    ++c.rows;
    keyWidths.insert(row.key.bits);
    valueWidths.insert(row.valueBits);
    values = values || row.valueBits > 0;
  }
  if (table.empty()) throw std::invalid_argument("the sweep has no rows of " + family.methodName());
  // only the widths measured on every unit (for every pairing) take part
  for (const auto& [u, byK] : table) {
    for (auto it = keyWidths.begin(); it != keyWidths.end();) it = byK.count(*it) ? std::next(it) : keyWidths.erase(it);
    for (const auto& [kb, byV] : byK)
      for (auto it = valueWidths.begin(); it != valueWidths.end();) it = byV.count(*it) ? std::next(it) : valueWidths.erase(it);
  }
  if (keyWidths.empty() || valueWidths.empty()) throw std::invalid_argument("the sweep does not hold the same widths on every unit");
  const std::vector<int> K(keyWidths.begin(), keyWidths.end()), V(valueWidths.begin(), valueWidths.end());
  if (!(budgetBits >= K.front() && budgetBits <= K.back()))
    throw std::invalid_argument("the budget must lie within the key widths measured (" + std::to_string(K.front()) + ".." + std::to_string(K.back()) + ")");

  // the key metric of a unit at a key width: its rows' mean (attention metrics do not depend on values)
  auto keyMetric = [&](const Unit& u, int kb) {
    double s = 0;
    size_t n = 0;
    for (const auto& [vb, c] : table.at(u).at(kb)) s += c.metric, n += c.rows;
    return s / static_cast<double>(n);
  };
  auto unitRows = [&](const Unit& u, int kb, int vb) { return table.at(u).at(kb).at(vb).rows; };
  auto outErr = [&](const Unit& u, int kb, int vb) {
    const Cell& c = table.at(u).at(kb).at(vb);
    return c.outputError / static_cast<double>(c.rows);
  };
  std::vector<Unit> units;
  for (const auto& [u, byK] : table) units.push_back(u);
  const double nu = static_cast<double>(units.size());

  // greedy over one width axis: steps to the next width of `widths` while the average stays within budget
  auto greedy = [&](const std::vector<int>& widths, const std::function<double(size_t unit, int width)>& score) {
    std::vector<size_t> at(units.size(), 0);
    double total = nu * widths.front();
    for (;;) {
      size_t best = units.size();
      double bestGain = 0;
      for (size_t u = 0; u < units.size(); ++u) {
        if (at[u] + 1 >= widths.size()) continue;
        const double delta = widths[at[u] + 1] - widths[at[u]];
        if ((total + delta) / nu > budgetBits + 1e-9) continue;
        const double gain = (score(u, widths[at[u] + 1]) - score(u, widths[at[u]])) / delta;
        if (gain > bestGain) bestGain = gain, best = u;
      }
      if (best == units.size()) break;
      total += widths[at[best] + 1] - widths[at[best]];
      ++at[best];
    }
    std::vector<int> out(units.size());
    for (size_t u = 0; u < units.size(); ++u) out[u] = widths[at[u]];
    return out;
  };
  const std::vector<int> kb = greedy(K, [&](size_t u, int w) { return sign * keyMetric(units[u], w); });
  std::vector<int> vb(units.size(), V.front());
  if (values) {
    if (!(budgetBits >= V.front() && budgetBits <= V.back()))
      throw std::invalid_argument("the budget must lie within the value widths measured (" + std::to_string(V.front()) + ".." + std::to_string(V.back()) + ")");
    vb = greedy(V, [&](size_t u, int w) { return -outErr(units[u], kb[u], w); });
  }

  AllocationPlan plan;
  plan.metric = cm.column;
  plan.budgetBits = budgetBits;
  plan.values = values;
  double wsum = 0, msum = 0, osum = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    AllocationUnit a;
    a.layer = units[u].first;
    a.kvHead = units[u].second;
    a.keyBits = kb[u];
    a.valueBits = values ? vb[u] : 0;
    a.keyMetric = keyMetric(units[u], kb[u]);
    a.outputError = values ? outErr(units[u], kb[u], vb[u]) : 0.0;
    const double w = static_cast<double>(unitRows(units[u], kb[u], vb[u]));
    wsum += w;
    msum += w * a.keyMetric;
    osum += w * a.outputError;
    plan.averageKeyBits += kb[u] / nu;
    plan.averageValueBits += (values ? vb[u] : 0) / nu;
    plan.units.push_back(a);
  }
  plan.measuredMetric = msum / wsum;
  plan.measuredOutputError = osum / wsum;
  auto uniform = [&](int b, double* oe) {
    double ws = 0, ms = 0, os = 0;
    const int v = values ? b : V.front();
    const bool haveV = std::find(V.begin(), V.end(), v) != V.end();
    for (const Unit& u : units) {
      const double w = static_cast<double>(unitRows(u, b, haveV ? v : V.front()));
      ws += w;
      ms += w * keyMetric(u, b);
      os += w * (haveV && values ? outErr(u, b, v) : std::numeric_limits<double>::quiet_NaN());
    }
    if (oe) *oe = os / ws;
    return ms / ws;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int below = static_cast<int>(std::floor(budgetBits)), above = static_cast<int>(std::ceil(budgetBits));
  const bool hasBelow = std::find(K.begin(), K.end(), below) != K.end(), hasAbove = std::find(K.begin(), K.end(), above) != K.end();
  plan.uniformBelowMetric = hasBelow ? uniform(below, nullptr) : nan;
  plan.uniformAboveMetric = hasAbove ? uniform(above, nullptr) : nan;
  plan.uniformMetric = plan.uniformOutputError = nan;
  if (below == above && hasBelow) plan.uniformMetric = uniform(below, &plan.uniformOutputError);
  if (!values) plan.uniformOutputError = nan;
  return plan;
}

}  // namespace tq
