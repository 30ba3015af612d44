// SPDX-License-Identifier: GPL-3.0-or-later
// FidelityView: fidelity metrics versus key bits from the sweep.
#include "fidelity_view.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "plot_common.h"
#include "explore/curves.h"
#include "explore/export.h"

namespace tq::ui {

// =============================================================== FidelityView
FidelityView::FidelityView(QWidget* parent) : PlotView("fidelity", "Fidelity versus key bits", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  const auto& metrics = tq::curveMetrics();
  for (int i = 0; i < 6; ++i) {
    auto* r = addPanel(m_plot, grid, i / 3, i % 3, QString::fromUtf8(metrics[static_cast<size_t>(i)].title), nullptr);
    r->axis(QCPAxis::atBottom)->setLabel("key bits");
    bitsTicker(r->axis(QCPAxis::atBottom));
    if (metrics[static_cast<size_t>(i)].logScale) setLogY(r);
    m_rects.push_back(r);
  }
  m_legend = new QCPLegend;
  m_plot->plotLayout()->addElement(2, 0, m_legend);
  m_legend->setLayer("legend");
  m_legend->setFillOrder(QCPLegend::foColumnsFirst);
  m_legend->setWrap(5);
  m_legend->setBorderPen(Qt::NoPen);
  m_legend->setFont(baseFont(8.5));
  m_legend->setProperty("basePt", 8.5);
  m_status = textElement(m_plot, "the sweep has not run yet", 9, false, kGrey);
  m_plot->plotLayout()->addElement(3, 0, m_status);
  finishLayout();
  m_plot->plotLayout()->setRowStretchFactor(2, 0.001);
}

void FidelityView::setRunning(const QString& text) {
  m_status->setText(text);
  requestReplot();
}

void FidelityView::setData(std::shared_ptr<const SweepOutput> out, const Experiment& cur) {
  clearPanels(m_plot);
  m_legend->clearItems();
  m_sweep = std::move(out);
  const SweepOutput& s = *m_sweep;
  const auto& res = s.result;
  const int d = res.headDim;
  const int curM = cur.keyMode == tq::KeyMode::Mse ? 0 : cur.projDimFor(d);
  const auto& metrics = tq::curveMetrics();
  // the numbers: core/explore/curves (the aggregation) and core/explore/export (the CSV of the CLI)
  const std::vector<tq::CurvePoint>& points = s.curves;
  std::map<std::pair<int, int>, std::vector<const tq::CurvePoint*>> series;  // (mode, m) -> points by bits
  for (const auto& p : points) series[{static_cast<int>(p.key.mode), p.key.projDim}].push_back(&p);
  std::map<int, int> variantOfMode;
  m_points = 0;
  const bool partial = res.partial();
  for (const auto& [key, pts] : series) {
    const auto mode = static_cast<tq::KeyMode>(key.first);
    const int m = key.second;
    const bool current = mode == cur.keyMode && m == curM;
    const QColor c = modeColor(mode, variantOfMode[key.first]++);
    const QString name = keyModeLabel(mode) + (mode == tq::KeyMode::Mse ? QString() : QString(" m=%1").arg(m));
    for (int mi = 0; mi < 6; ++mi) {
      const auto& md = metrics[static_cast<size_t>(mi)];
      QVector<double> x, mean, lo, hi;
      for (const auto* p : pts) {
        const size_t i = static_cast<size_t>(mi);
        auto clampLog = [&](double v) { return md.logScale ? std::max(v, 1e-7) : v; };
        x << p->key.bits;
        mean << clampLog(p->mean[i]);
        // band: min-max over (layer, head) rows of the full grid; 95 % interval of the mean while partial
        lo << clampLog(partial ? p->mean[i] - p->ci95[i] : p->min[i]);
        hi << clampLog(partial ? p->mean[i] + p->ci95[i] : p->max[i]);
        ++m_points;
      }
      auto* r = m_rects[static_cast<size_t>(mi)];
      auto* gl = addGraph(m_plot, r, x, lo, Qt::NoPen);
      auto* gh = addGraph(m_plot, r, x, hi, Qt::NoPen);
      gh->setBrush(withAlpha(c, current ? 60 : 28));
      gh->setChannelFillGraph(gl);
      const Qt::PenStyle ps = mode == tq::KeyMode::QjlOnly ? Qt::DashLine : Qt::SolidLine;
      auto* g = addGraph(m_plot, r, x, mean, pen(c, current ? 3.2 : 1.4, ps), QCPScatterStyle(QCPScatterStyle::ssCircle, c, c, current ? 6 : 4));
      g->setName(name + (current ? "  (current)" : ""));
      if (mi == 0) g->addToLegend(m_legend);
      if (current) {
        const int idx = static_cast<int>(std::find(x.begin(), x.end(), static_cast<double>(cur.keyBits)) - x.begin());
        if (idx < x.size()) {
          auto* hl = addGraph(m_plot, r, {x[idx]}, {mean[idx]}, pen(Qt::black, 2), QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 2), Qt::NoBrush, 14),
                              QCPGraph::lsNone);
          hl->setProperty("baseWidth", QVariant());
          auto* label = new QCPItemText(m_plot);
          label->setClipAxisRect(r);
          label->position->setAxes(r->axis(QCPAxis::atBottom), r->axis(QCPAxis::atLeft));
          label->position->setCoords(x[idx], mean[idx]);
          label->setPositionAlignment(Qt::AlignLeft | Qt::AlignBottom);
          label->setPadding(QMargins(8, 0, 0, 6));
          label->setFont(baseFont(8, true));
          label->setText(QString::number(mean[idx], 'g', md.logScale ? 2 : 3));
        }
      }
    }
  }
  for (int mi = 0; mi < 6; ++mi) {
    auto* r = m_rects[static_cast<size_t>(mi)];
    auto* y = r->axis(QCPAxis::atLeft);
    y->rescale(true);
    if (metrics[static_cast<size_t>(mi)].logScale) {
      y->setRange(y->range().lower / 2, y->range().upper * 2);
    } else {
      const auto rg = y->range();
      fitY(r, rg.lower, rg.upper);
      if (mi == 1 || mi == 2) y->setRange(std::min(rg.lower, 0.0) - 0.04, 1.04);
    }
    bitsTicker(r->axis(QCPAxis::atBottom));
  }
  const size_t rowsPerPoint = points.empty() ? 0 : points.front().rows;
  QString cells = QString("%1 of %2 cells (layer × kv head)").arg(res.cellsDone).arg(res.cellsTotal);
  if (res.cellsTotal < res.cellsInGrid) cells += QString(", a seeded sample of %1").arg(res.cellsInGrid);
  QString status;
  if (res.cancelled)
    status = QString("CANCELLED after %1 · %2 rows per point · band = 95 % interval of the mean").arg(cells).arg(rowsPerPoint);
  else if (partial && res.firstPassCells > res.cellsDone)
    status = QString("sweep running: the current series on %1 of %2 cells first, then the others (%3 cells complete) · band = 95 % interval of the mean so far")
                 .arg(res.firstPassCells).arg(res.cellsTotal).arg(res.cellsDone);
  else if (partial)
    status = QString("sweep running: %1 · %2 rows per point · band = 95 % interval of the mean so far").arg(cells).arg(rowsPerPoint);
  else
    status = QString("%1 · %2 rows (layer × head) per point · band = min–max over heads").arg(cells).arg(rowsPerPoint);
  status += QString(" · %1 · values %2 bits · %3 · %4 s").arg(QString::fromStdString(res.queryLabel)).arg(cur.valueBits).arg(QString::fromStdString(res.backend)).arg(res.seconds, 0, 'f', 2);
  if (res.cpuFallbackCells) status += QString(" · %1 cells evaluated on the CPU (the device declined them)").arg(res.cpuFallbackCells);
  m_status->setText(status);
  m_status->setTextColor(res.cancelled ? kVermillion : kGrey);
  applyStyle();
  requestReplot();
}

QString FidelityView::csv() const {
  if (!m_sweep) return {};
  std::ostringstream os;
  tq::writeCsv(m_sweep->result, os);
  return QString::fromStdString(os.str());
}
int FidelityView::dataPoints() const { return m_points; }

}  // namespace tq::ui
