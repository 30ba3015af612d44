// SPDX-License-Identifier: GPL-3.0-or-later
// FidelityView: fidelity metrics versus key bits from the sweep.
#include "fidelity_view.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include <QMouseEvent>
#include <QToolTip>
#include <tuple>

#include "plot_common.h"
#include "explore/curves.h"
#include "explore/export.h"

namespace tq::ui {

// =============================================================== FidelityView
FidelityView::FidelityView(QWidget* parent) : PlotView("fidelity", "Fidelity versus key bits", parent) {
  connect(m_plot, &QCustomPlot::mouseMove, this, [this](QMouseEvent* ev) {
    // the nearest point within 12 px of the mouse, in the panel under it
    const HoverPoint* best = nullptr;
    double bestD = 144;
    for (const auto& h : m_hover) {
      if (!h.rect->rect().contains(ev->pos())) continue;
      const double px = h.rect->axis(QCPAxis::atBottom)->coordToPixel(h.x), py = h.rect->axis(QCPAxis::atLeft)->coordToPixel(h.y);
      const double dd = (px - ev->pos().x()) * (px - ev->pos().x()) + (py - ev->pos().y()) * (py - ev->pos().y());
      if (dd < bestD) bestD = dd, best = &h;
    }
    if (best)
      QToolTip::showText(ev->globalPosition().toPoint(), best->text, m_plot);
    else
      QToolTip::hideText();
  });
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

namespace {
/// How a method's series looks: TurboQuant's modes as before, the baselines in colours of their own
/// and their own marker (the shape tells them apart without colour).
struct SeriesStyle {
  QColor color;
  Qt::PenStyle line;
  QCPScatterStyle::ScatterShape shape;
  QString name;
};
SeriesStyle seriesStyle(const tq::KeyVariant& k, int variant) {
  switch (k.method) {
    case tq::Method::TurboQuant: {
      QString name = keyModeLabel(k.mode) + (k.mode == tq::KeyMode::Mse ? QString() : QString(" m=%1").arg(k.projDim));
      return {modeColor(k.mode, variant), k.mode == tq::KeyMode::QjlOnly ? Qt::DashLine : Qt::SolidLine, QCPScatterStyle::ssCircle, name};
    }
    case tq::Method::TqMseNormCorrected: return {kGrey, Qt::DashDotLine, QCPScatterStyle::ssCircle, "MSE-only, norm-corrected"};
    case tq::Method::TqRef11: return {QColor(0, 70, 120), Qt::DotLine, QCPScatterStyle::ssPlus, "reference's 1+1 (1 MSE bit + d signs)"};
    case tq::Method::TqMseOutliers: return {QColor(0, 120, 120), Qt::DashDotLine, QCPScatterStyle::ssStar, "MSE-only, outlier channels at b+1"};
    case tq::Method::Kivi: return {QColor(148, 52, 160), Qt::SolidLine, QCPScatterStyle::ssSquare, "KIVI"};
    case tq::Method::IntRot: return {QColor(120, 110, 0), Qt::SolidLine, QCPScatterStyle::ssTriangle, "rotated int"};
    case tq::Method::Fp8E4M3: return {QColor(170, 40, 80), Qt::SolidLine, QCPScatterStyle::ssDiamond, "fp8 e4m3"};
    case tq::Method::Fp8E5M2: return {QColor(170, 40, 80), Qt::DashLine, QCPScatterStyle::ssTriangleInverted, "fp8 e5m2"};
    case tq::Method::Fp16: return {QColor(90, 90, 90), Qt::SolidLine, QCPScatterStyle::ssCross, "fp16"};
  }
  return {kBlack, Qt::SolidLine, QCPScatterStyle::ssCircle, "?"};
}
}  // namespace

void FidelityView::setData(std::shared_ptr<const SweepOutput> out, const Experiment& cur) {
  clearPanels(m_plot);
  m_legend->clearItems();
  m_hover.clear();
  m_sweep = std::move(out);
  const SweepOutput& s = *m_sweep;
  const auto& res = s.result;
  const int d = res.headDim;
  const int curM = cur.keyMode == tq::KeyMode::Mse ? 0 : cur.projDimFor(d);
  const auto& metrics = tq::curveMetrics();
  const FidelityAxis axis = cur.fidelityX;
  const bool bytesAxis = axis != FidelityAxis::KeyBits;
  titleElement()->setText(axis == FidelityAxis::KeyBits ? "Fidelity versus key bits"
                          : axis == FidelityAxis::Bytes ? "Fidelity versus bytes stored per token and kv head"
                                                        : "Fidelity versus compression ratio (fp16 = 1×)");
  // the numbers: core/explore/curves (the aggregation, bytes, frontier) and core/explore/export (the CSV)
  const std::vector<tq::CurvePoint>& points = s.curves;
  const double fp16 = tq::fp16PointBytes(res);
  const bool withValues = fp16 > 2.0 * d;
  auto xOf = [&](const tq::CurvePoint& p) {
    if (axis == FidelityAxis::Bytes) return tq::pointBytes(p);
    if (axis == FidelityAxis::Ratio) return fp16 / tq::pointBytes(p);
    return static_cast<double>(p.key.bits);
  };
  const QString xLabel = axis == FidelityAxis::Bytes ? (withValues ? "bytes per token·kv head (K+V, log)" : "key bytes per token·kv head (log)")
                         : axis == FidelityAxis::Ratio ? "compression vs fp16 (×, log)" : "key bits";
  for (auto* r : m_rects) {
    auto* x = r->axis(QCPAxis::atBottom);
    x->setLabel(xLabel);
    if (bytesAxis) {
      x->setScaleType(QCPAxis::stLogarithmic);
      QSharedPointer<QCPAxisTickerLog> t(new QCPAxisTickerLog);
      t->setLogBase(2);
      t->setSubTickCount(1);
      x->setTicker(t);
      x->setNumberFormat("gb");
    } else {
      x->setScaleType(QCPAxis::stLinear);
      bitsTicker(x);
    }
  }
  using SeriesKey = std::tuple<int, int, int>;  // (method, mode, m)
  std::map<SeriesKey, std::vector<const tq::CurvePoint*>> series;
  for (const auto& p : points) {
    // fp16 stores 16 bits: on the key-bits axis (1..8) it has no place; the bytes axes show it
    if (!bytesAxis && p.key.bits > 8) continue;
    series[{static_cast<int>(p.key.method), static_cast<int>(p.key.mode), p.key.projDim}].push_back(&p);
  }
  std::map<int, int> variantOfMode;
  m_points = 0;
  const bool partial = res.partial();
  for (const auto& [key, ptsIn] : series) {
    std::vector<const tq::CurvePoint*> pts = ptsIn;
    std::sort(pts.begin(), pts.end(), [&](const tq::CurvePoint* a, const tq::CurvePoint* b) { return xOf(*a) < xOf(*b); });
    const tq::KeyVariant& kv = pts.front()->key;
    const bool tqSeries = kv.method == tq::Method::TurboQuant;
    const bool current = tqSeries && kv.mode == cur.keyMode && kv.projDim == curM;
    const SeriesStyle st = seriesStyle(kv, tqSeries ? variantOfMode[static_cast<int>(kv.mode)]++ : 0);
    const QColor c = st.color;
    for (int mi = 0; mi < 6; ++mi) {
      const auto& md = metrics[static_cast<size_t>(mi)];
      QVector<double> x, mean, lo, hi;
      auto* r = m_rects[static_cast<size_t>(mi)];
      for (const auto* p : pts) {
        const size_t i = static_cast<size_t>(mi);
        auto clampLog = [&](double v) { return md.logScale ? std::max(v, 1e-7) : v; };
        x << xOf(*p);
        mean << clampLog(p->mean[i]);
        // band: min-max over (layer, head) rows of the full grid; 95 % interval of the mean while partial
        lo << clampLog(partial ? p->mean[i] - p->ci95[i] : p->min[i]);
        hi << clampLog(partial ? p->mean[i] + p->ci95[i] : p->max[i]);
        ++m_points;
        m_hover.push_back({r, x.back(), mean.back(),
                           QString("%1 · K%2%3 · %4 B/token·head (keys %5, values %6) · %7 = %8 (mean of %9 heads)")
                               .arg(st.name).arg(p->key.bits).arg(p->valueBits > 0 ? QString("/V%1").arg(p->valueBits) : QString())
                               .arg(tq::pointBytes(*p), 0, 'f', 1).arg(p->keyBytes, 0, 'f', 1).arg(p->valueBytes, 0, 'f', 1)
                               .arg(QString::fromUtf8(md.title)).arg(p->mean[i], 0, 'g', 4).arg(p->rows)});
      }
      auto* gl = addGraph(m_plot, r, x, lo, Qt::NoPen);
      auto* gh = addGraph(m_plot, r, x, hi, Qt::NoPen);
      gh->setBrush(withAlpha(c, current ? 60 : (tqSeries ? 28 : 16)));
      gh->setChannelFillGraph(gl);
      auto* g = addGraph(m_plot, r, x, mean, pen(c, current ? 3.2 : 1.4, st.line), QCPScatterStyle(st.shape, c, tqSeries ? c : QColor(Qt::white), current ? 6 : 5));
      g->setName(st.name + (current ? "  (current)" : ""));
      if (mi == 0) g->addToLegend(m_legend);
      if (current) {
        int idx = -1;
        for (int k = 0; k < static_cast<int>(pts.size()); ++k)
          if (pts[static_cast<size_t>(k)]->key.bits == cur.keyBits) idx = k;
        if (idx >= 0) {
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
  // the Pareto frontier over every point shown (bytes axes): fewest bytes for the best mean
  m_frontier = 0;
  if (bytesAxis) {
    std::vector<tq::CurvePoint> shown;
    for (const auto& [key, pts] : series)
      for (const auto* p : pts) shown.push_back(*p);
    for (int mi = 0; mi < 6; ++mi) {
      const auto front = tq::paretoFrontier(shown, static_cast<size_t>(mi));
      QVector<double> fx, fy;
      for (size_t i : front) {
        fx << xOf(shown[i]);
        fy << (metrics[static_cast<size_t>(mi)].logScale ? std::max(shown[i].mean[static_cast<size_t>(mi)], 1e-7) : shown[i].mean[static_cast<size_t>(mi)]);
      }
      if (axis == FidelityAxis::Ratio) {  // ascending x for the line
        std::reverse(fx.begin(), fx.end());
        std::reverse(fy.begin(), fy.end());
      }
      auto* g = addGraph(m_plot, m_rects[static_cast<size_t>(mi)], fx, fy, pen(QColor(0, 0, 0, 150), 5.0, Qt::SolidLine),
                         QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(QColor(0, 0, 0, 150), 1.5), Qt::NoBrush, 11), QCPGraph::lsNone);
      g->setName("Pareto frontier (fewest bytes for the fidelity)");
      if (mi == 0) {
        g->addToLegend(m_legend);
        m_frontier = static_cast<int>(front.size());
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
      if (mi == 5) {  // output error: the means decide the range (a min-max band of 10 would flatten them)
        double top = 0;
        for (const auto& [key, pts] : series)
          for (const auto* p : pts) top = std::max(top, p->mean[5]);
        if (top > 0) y->setRange(std::min(0.0, rg.lower), top * 1.25);
      }
    }
    if (bytesAxis) {
      r->axis(QCPAxis::atBottom)->rescale(true);
      const auto xr = r->axis(QCPAxis::atBottom)->range();
      r->axis(QCPAxis::atBottom)->setRange(xr.lower / 1.15, xr.upper * 1.15);
    } else {
      bitsTicker(r->axis(QCPAxis::atBottom));
    }
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
  // a second line: what the comparison charges and how to read it
  QStringList second;
  if (bytesAxis) second << "rings: Pareto frontier" << "hover: configuration";
  if (!res.config.methods.empty()) second << "baselines' values use the same method; every stored byte is charged";
  if (!bytesAxis && !res.config.methods.empty()) second << "fp16 only on the bytes axes (Fidelity x)";
  if (!second.isEmpty()) status += "\n" + second.join(" · ");
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

QString FidelityView::hoverTextNear(int panel, double x, double y) const {
  if (panel < 0 || panel >= static_cast<int>(m_rects.size())) return {};
  const QString* best = nullptr;
  double bestD = 1e300;
  for (const auto& h : m_hover) {
    if (h.rect != m_rects[static_cast<size_t>(panel)]) continue;
    const double dd = (h.x - x) * (h.x - x) + (h.y - y) * (h.y - y);
    if (dd < bestD) bestD = dd, best = &h.text;
  }
  return best ? *best : QString();
}

}  // namespace tq::ui
