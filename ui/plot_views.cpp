// SPDX-License-Identifier: GPL-3.0-or-later
// The only translation unit of tq_ui that includes qcustomplot.h.
#include "plot_views.h"

#include <qcustomplot.h>

#include <QContextMenuEvent>
#include <QFile>
#include <QGraphicsOpacityEffect>
#include <QLabel>
#include <QMenu>
#include <QPdfWriter>
#include <QSvgGenerator>
#include <QTimer>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "explore/curves.h"
#include "explore/export.h"
#include "metrics/metrics.h"

namespace tq::ui {

namespace {
const QString kHoverHint = QStringLiteral("hover a cell for token text and values · wheel: zoom · drag: pan (all three linked)");

// Okabe-Ito colour-blind-safe palette.
const QColor kBlack(0, 0, 0), kOrange(230, 159, 0), kSky(86, 180, 233), kGreen(0, 158, 115), kBlue(0, 114, 178),
    kVermillion(213, 94, 0), kPink(204, 121, 167), kGrey(110, 110, 110);

QColor modeColor(tq::KeyMode m, int variant = 0) {
  static const QColor prod[] = {kBlue, kSky, kGreen, QColor(0, 70, 120)};
  static const QColor qjl[] = {kVermillion, kOrange, kPink, QColor(140, 60, 0)};
  if (m == tq::KeyMode::Mse) return kBlack;
  return m == tq::KeyMode::Prod ? prod[variant % 4] : qjl[variant % 4];
}

QColor withAlpha(QColor c, int a) {
  c.setAlpha(a);
  return c;
}

QCPColorGradient viridis() {
  QCPColorGradient g;
  g.clearColorStops();
  const QColor stops[] = {QColor(68, 1, 84), QColor(72, 40, 120), QColor(62, 74, 137), QColor(49, 104, 142), QColor(38, 130, 142),
                          QColor(31, 158, 137), QColor(53, 183, 121), QColor(110, 206, 88), QColor(181, 222, 43), QColor(253, 231, 37)};
  for (int i = 0; i < 10; ++i) g.setColorStopAt(i / 9.0, stops[i]);
  g.setColorInterpolation(QCPColorGradient::ciRGB);
  g.setNanHandling(QCPColorGradient::nhNanColor);
  g.setNanColor(QColor(235, 235, 235));
  return g;
}

QCPColorGradient diverging() {
  QCPColorGradient g;
  g.clearColorStops();
  g.setColorStopAt(0.0, QColor(5, 48, 97));
  g.setColorStopAt(0.25, QColor(67, 147, 195));
  g.setColorStopAt(0.5, QColor(247, 247, 247));
  g.setColorStopAt(0.75, QColor(214, 96, 77));
  g.setColorStopAt(1.0, QColor(103, 0, 31));
  g.setColorInterpolation(QCPColorGradient::ciRGB);
  g.setNanHandling(QCPColorGradient::nhNanColor);
  g.setNanColor(QColor(235, 235, 235));
  return g;
}

QFont baseFont(double pt, bool bold = false) {
  QFont f("DejaVu Sans");
  f.setPointSizeF(pt);
  f.setBold(bold);
  return f;
}

QCPTextElement* textElement(QCustomPlot* p, const QString& text, double pt, bool bold = false, QColor color = Qt::black) {
  auto* t = new QCPTextElement(p, text, baseFont(pt, bold));
  t->setProperty("basePt", pt);
  t->setTextColor(color);
  return t;
}

/// Axis rect with a small title above it, placed at (row, col) of grid.
QCPAxisRect* addPanel(QCustomPlot* p, QCPLayoutGrid* grid, int row, int col, const QString& title, QCPTextElement** titleOut) {
  auto* cell = new QCPLayoutGrid;
  grid->addElement(row, col, cell);
  auto* t = textElement(p, title, 9.5, true);
  cell->addElement(0, 0, t);
  auto* r = new QCPAxisRect(p);
  cell->addElement(1, 0, r);
  cell->setRowSpacing(0);
  for (auto* ax : r->axes()) ax->setLayer("axes");
  r->axis(QCPAxis::atBottom)->grid()->setLayer("grid");
  r->axis(QCPAxis::atLeft)->grid()->setLayer("grid");
  if (titleOut) *titleOut = t;
  return r;
}

QCPLegend* insetLegend(QCPAxisRect* r, Qt::Alignment where) {
  auto* l = new QCPLegend;
  r->insetLayout()->addElement(l, where);
  l->setLayer("legend");
  l->setBrush(QColor(255, 255, 255, 220));
  l->setBorderPen(QPen(QColor(180, 180, 180)));
  l->setFont(baseFont(8));
  l->setProperty("basePt", 8.0);
  return l;
}

QCPGraph* addGraph(QCustomPlot* p, QCPAxisRect* r, const QVector<double>& x, const QVector<double>& y, const QPen& pen,
                   QCPScatterStyle ss = QCPScatterStyle(), QCPGraph::LineStyle ls = QCPGraph::lsLine) {
  auto* g = p->addGraph(r->axis(QCPAxis::atBottom), r->axis(QCPAxis::atLeft));
  g->setData(x, y, true);
  g->setPen(pen);
  g->setProperty("baseWidth", pen.widthF());
  g->setScatterStyle(ss);
  g->setLineStyle(ls);
  return g;
}

QPen pen(const QColor& c, double w = 1.6, Qt::PenStyle s = Qt::SolidLine) {
  QPen p(c, w, s);
  p.setCapStyle(Qt::FlatCap);
  return p;
}

void setLogY(QCPAxisRect* r) {
  auto* y = r->axis(QCPAxis::atLeft);
  y->setScaleType(QCPAxis::stLogarithmic);
  QSharedPointer<QCPAxisTickerLog> t(new QCPAxisTickerLog);
  y->setTicker(t);
  y->setNumberFormat("eb");
  y->setNumberPrecision(0);
}

void bitsTicker(QCPAxis* x) {
  QSharedPointer<QCPAxisTickerFixed> t(new QCPAxisTickerFixed);
  t->setTickStep(1);
  t->setScaleStrategy(QCPAxisTickerFixed::ssNone);
  x->setTicker(t);
  x->setRange(0.5, 8.5);
}

QVector<double> vec(const std::vector<double>& v) { return QVector<double>(v.begin(), v.end()); }
QVector<double> vecf(const std::vector<float>& v) {
  QVector<double> out;
  out.reserve(static_cast<int>(v.size()));
  for (float f : v) out.push_back(f);
  return out;
}
QVector<double> iota(int n, double start = 0) {
  QVector<double> v(n);
  for (int i = 0; i < n; ++i) v[i] = start + i;
  return v;
}

QString csvEscape(const std::string& s) {
  QString q = QString::fromStdString(s);
  q.replace('"', "\"\"");
  return '"' + q + '"';
}

void clearPanels(QCustomPlot* p) {
  p->clearPlottables();
  p->clearItems();
}

/// Padded y range of some data.
void fitY(QCPAxisRect* r, double lo, double hi, double padFrac = 0.06) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return;
  if (hi <= lo) {
    hi = lo + 1;
    lo -= 1;
  }
  const double pad = (hi - lo) * padFrac;
  r->axis(QCPAxis::atLeft)->setRange(lo - pad, hi + pad);
}

}  // namespace

// =============================================================== PlotView
PlotView::PlotView(const QString& id, const QString& title, QWidget* parent) : QWidget(parent), m_id(id), m_title(title) {
  setObjectName(id);
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  m_plot = new QCustomPlot(this);
  m_plot->setObjectName(id + "Plot");
  lay->addWidget(m_plot);
  m_plot->plotLayout()->clear();
  m_plot->setAutoAddPlottableToLegend(false);
  m_plot->setNoAntialiasingOnDrag(true);
  m_plot->setPlottingHint(QCP::phCacheLabels, true);
  m_titleEl = textElement(m_plot, title, 12.5, true);
  m_plot->plotLayout()->addElement(0, 0, m_titleEl);
  m_plot->setMinimumSize(360, 260);
  m_banner = new QLabel(this);
  m_banner->setObjectName(id + "Outdated");
  m_banner->setAlignment(Qt::AlignCenter);
  m_banner->setStyleSheet("QLabel { background: rgba(255,255,255,225); color: #333; border: 1px solid #999; border-radius: 4px; padding: 6px 14px; font-weight: bold; }");
  m_banner->hide();
  m_outdatedTimer = new QTimer(this);
  m_outdatedTimer->setSingleShot(true);
  m_outdatedTimer->setInterval(150);
  connect(m_outdatedTimer, &QTimer::timeout, this, [this] { showOutdated(m_outdated); });
}

void PlotView::setOutdated(bool on, const QString& why) {
  m_outdated = on;
  m_outdatedWhy = on ? why : QString();
  m_banner->setText(why);
  if (!on) {
    m_outdatedTimer->stop();
    showOutdated(false);
  } else if (m_banner->isVisible()) {
    showOutdated(true);  // already greyed: only the text changes
  } else {
    m_outdatedTimer->start();
  }
}

void PlotView::showOutdated(bool on) {
  if (on) {
    if (!m_fade) {
      m_fade = new QGraphicsOpacityEffect(m_plot);
      m_fade->setOpacity(0.3);
      m_plot->setGraphicsEffect(m_fade);  // owned by m_plot from here on
    }
    m_fade->setEnabled(true);
    m_banner->adjustSize();
    m_banner->move((width() - m_banner->width()) / 2, std::max(0, height() / 3 - m_banner->height() / 2));
    m_banner->show();
    m_banner->raise();
  } else {
    if (m_fade) m_fade->setEnabled(false);
    m_banner->hide();
  }
}

void PlotView::finishLayout() {
  m_captionEl = textElement(m_plot, m_caption.isEmpty() ? QString(" ") : m_caption, 8.5, false, QColor(70, 70, 70));
  m_plot->plotLayout()->addElement(m_plot->plotLayout()->rowCount(), 0, m_captionEl);
  applyStyle();
}

void PlotView::setCaption(const QString& caption) {
  m_caption = caption;
  if (m_captionEl) m_captionEl->setText(caption);
  requestReplot();
}

void PlotView::setPresentation(bool on) {
  m_presentation = on;
  applyStyle();
  requestReplot();
}

void PlotView::applyStyle() {
  const double s = m_presentation ? 1.45 : 1.0;
  for (auto* r : m_plot->axisRects()) {
    for (auto* ax : r->axes()) {
      ax->setTickLabelFont(baseFont(8.5 * s));
      ax->setLabelFont(baseFont(9.5 * s));
      QPen bp = ax->basePen();
      bp.setWidthF(s);
      ax->setBasePen(bp);
    }
    for (auto* el : r->insetLayout()->elements(false))
      if (auto* lg = qobject_cast<QCPLegend*>(el)) lg->setFont(baseFont(lg->property("basePt").toDouble() * s));
  }
  for (auto* el : m_plot->plotLayout()->elements(true)) {
    if (auto* t = qobject_cast<QCPTextElement*>(el)) {
      const double pt = t->property("basePt").toDouble();
      if (pt > 0) {
        QFont f = t->font();
        f.setPointSizeF(pt * s);
        t->setFont(f);
      }
    } else if (auto* lg = qobject_cast<QCPLegend*>(el)) {
      lg->setFont(baseFont(lg->property("basePt").toDouble() * s));
    } else if (auto* cs = qobject_cast<QCPColorScale*>(el)) {
      cs->axis()->setTickLabelFont(baseFont(8.5 * s));
      cs->axis()->setLabelFont(baseFont(9.5 * s));
    }
  }
  for (int i = 0; i < m_plot->plottableCount(); ++i) {
    auto* pl = m_plot->plottable(i);
    const double bw = pl->property("baseWidth").toDouble();
    if (bw > 0) {
      QPen p = pl->pen();
      p.setWidthF(bw * (m_presentation ? 1.8 : 1.0));
      pl->setPen(p);
    }
  }
}

void PlotView::replotNow() {
  m_stale = false;
  m_plot->replot(QCustomPlot::rpImmediateRefresh);
}

void PlotView::requestReplot() {
  // Hidden tabs are replotted when shown: a change then costs only the visible view's rendering.
  if (isVisible()) {
    m_stale = false;
    m_plot->replot(QCustomPlot::rpQueuedReplot);
  } else {
    m_stale = true;
  }
}

void PlotView::showEvent(QShowEvent* ev) {
  QWidget::showEvent(ev);
  if (m_stale) replotNow();
}

void PlotView::resetZoom() {
  for (auto* r : m_plot->axisRects())
    for (auto* ax : r->axes(QCPAxis::atBottom | QCPAxis::atLeft)) ax->rescale(true);
  requestReplot();
}

void PlotView::contextMenuEvent(QContextMenuEvent* ev) {
  QMenu menu(this);
  menu.addAction("Export this view…", this, [this] { emit exportRequested(); });
  menu.addAction("Reset zoom", this, [this] { resetZoom(); });
  menu.exec(ev->globalPos());
}

// =============================================================== AttentionView
AttentionView::AttentionView(QWidget* parent) : PlotView("attention", "Attention: exact vs TurboQuant", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  auto* group = new QCPMarginGroup(m_plot);
  const char* names[3] = {"exact", "TurboQuant", "difference (TQ − exact)"};
  const int cols[3] = {0, 1, 3};
  auto* scaleA = new QCPColorScale(m_plot);
  auto* scaleD = new QCPColorScale(m_plot);
  for (int k = 0; k < 3; ++k) {
    m_panelTitle[k] = textElement(m_plot, names[k], 9.5, true);
    grid->addElement(0, cols[k], m_panelTitle[k]);
    m_rect[k] = new QCPAxisRect(m_plot);
    grid->addElement(1, cols[k], m_rect[k]);
    m_rect[k]->setMarginGroup(QCP::msTop | QCP::msBottom, group);
    m_rect[k]->setupFullAxesBox(true);
    auto* x = m_rect[k]->axis(QCPAxis::atBottom);
    auto* y = m_rect[k]->axis(QCPAxis::atLeft);
    x->setLabel("key token");
    if (k == 0) y->setLabel("query token");
    y->setRangeReversed(true);
    m_rect[k]->axis(QCPAxis::atRight)->setRangeReversed(true);
    m_rect[k]->setRangeDrag(Qt::Horizontal | Qt::Vertical);
    m_rect[k]->setRangeZoom(Qt::Horizontal | Qt::Vertical);
    m_map[k] = new QCPColorMap(x, y);
    m_map[k]->setInterpolate(false);
    m_map[k]->setTightBoundary(false);
    m_map[k]->setColorScale(k == 2 ? scaleD : scaleA);
    m_map[k]->setGradient(k == 2 ? diverging() : viridis());
    connect(x, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this, k](const QCPRange&) {
      if (m_syncing) return;
      m_syncing = true;
      for (int o = 0; o < 3; ++o)
        if (o != k) m_rect[o]->axis(QCPAxis::atBottom)->setRange(m_rect[k]->axis(QCPAxis::atBottom)->range());
      m_syncing = false;
      onRangeChanged();
    });
    connect(y, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this, k](const QCPRange&) {
      if (m_syncing) return;
      m_syncing = true;
      for (int o = 0; o < 3; ++o)
        if (o != k) m_rect[o]->axis(QCPAxis::atLeft)->setRange(m_rect[k]->axis(QCPAxis::atLeft)->range());
      m_syncing = false;
      onRangeChanged();
    });
  }
  grid->addElement(1, 2, scaleA);
  grid->addElement(1, 4, scaleD);
  grid->addElement(0, 2, textElement(m_plot, " ", 8));
  grid->addElement(0, 4, textElement(m_plot, " ", 8));
  for (auto* s : {scaleA, scaleD}) {
    s->setType(QCPAxis::atRight);
    s->setBarWidth(12);
    s->setMarginGroup(QCP::msTop | QCP::msBottom, group);
  }
  scaleA->setGradient(viridis());
  scaleD->setGradient(diverging());
  scaleD->axis()->setLabel("Δ");
  grid->setColumnStretchFactors({1, 1, 0.01, 1, 0.01});
  m_hoverEl = textElement(m_plot, kHoverHint, 9, false, QColor(40, 40, 110));
  m_plot->plotLayout()->addElement(2, 0, m_hoverEl);
  m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
  m_plot->setMouseTracking(true);
  connect(m_plot, &QCustomPlot::mouseMove, this, &AttentionView::onMouseMove);
  m_lodTimer = new QTimer(this);
  m_lodTimer->setSingleShot(true);
  m_lodTimer->setInterval(150);
  connect(m_lodTimer, &QTimer::timeout, this, [this] {
    if (!m_data || m_seq <= 512) return;
    const auto xr = m_rect[0]->axis(QCPAxis::atBottom)->range();
    const auto yr = m_rect[0]->axis(QCPAxis::atLeft)->range();
    auto clampTok = [this](double v) { return std::clamp(static_cast<int>(std::floor(v + 0.5)), 0, m_seq); };
    int c0 = clampTok(xr.lower), c1 = std::max(c0 + 1, clampTok(xr.upper + 1));
    int r0 = clampTok(yr.lower), r1 = std::max(r0 + 1, clampTok(yr.upper + 1));
    const int needC = (c1 - c0 + 511) / 512, needR = (r1 - r0 + 511) / 512;
    const bool inside = c0 >= m_heat.col0 && c1 <= m_heat.col1 && r0 >= m_heat.row0 && r1 <= m_heat.row1;
    if (inside && needC >= m_heat.colStride && needR >= m_heat.rowStride) return;  // detail already sufficient
    // ask for the visible region plus a margin so small pans stay sharp
    const int mc = (c1 - c0) / 4, mr = (r1 - r0) / 4;
    c0 = std::max(0, c0 - mc);
    c1 = std::min(m_seq, c1 + mc);
    r0 = std::max(0, r0 - mr);
    r1 = std::min(m_seq, r1 + mr);
    if (c0 == 0 && r0 == 0 && c1 == m_seq && r1 == m_seq && m_heat.row0 == 0 && m_heat.col0 == 0 && m_heat.row1 == m_seq && m_heat.col1 == m_seq) return;
    emit regionRequested(r0, r1, c0, c1);
  });
  finishLayout();
}

void AttentionView::clearTransient() {
  if (m_hoverEl->text() != kHoverHint) {
    m_hoverEl->setText(kHoverHint);
    m_plot->replot(QCustomPlot::rpImmediateRefresh);
  }
}

void AttentionView::setData(const Heatmap& h, std::shared_ptr<const DataContext> ctx, int layer, int qHead, int kvHead, const QString& queryLabel) {
  m_hoverEl->setText(kHoverHint);  // a read-out of the previous data would be wrong now
  const bool newShape = !m_data || ctx->shape.seq != m_seq || ctx != m_data;
  m_heat = h;
  m_data = std::move(ctx);
  m_seq = m_data->shape.seq;
  const double cs = h.colStride, rs = h.rowStride;
  double lo = 1e300, hi = -1e300, dmax = 0;
  for (int k = 0; k < 3; ++k) {
    auto* md = m_map[k]->data();
    md->setSize(h.cols, h.rows);
    md->setRange(QCPRange(h.col0 + (cs - 1) / 2, h.col0 + (h.cols - 1) * cs + (cs - 1) / 2),
                 QCPRange(h.row0 + (rs - 1) / 2, h.row0 + (h.rows - 1) * rs + (rs - 1) / 2));
    const auto& src = k == 0 ? h.exact : k == 1 ? h.approx : h.diff;
    for (int i = 0; i < h.rows; ++i)
      for (int j = 0; j < h.cols; ++j) {
        const float v = src[static_cast<size_t>(i) * h.cols + j];
        md->setCell(j, i, v);
        if (std::isnan(v)) continue;
        if (k < 2) {
          lo = std::min(lo, static_cast<double>(v));
          hi = std::max(hi, static_cast<double>(v));
        } else {
          dmax = std::max(dmax, static_cast<double>(std::fabs(v)));
        }
      }
  }
  if (hi < lo) lo = 0, hi = 1;
  auto* scaleA = m_map[0]->colorScale();
  if (h.softmax) {
    lo = std::max(lo, hi * 1e-4);
    for (int k = 0; k < 2; ++k) {
      m_map[k]->setDataScaleType(QCPAxis::stLogarithmic);
      m_map[k]->setDataRange(QCPRange(lo, hi));
    }
    scaleA->setDataScaleType(QCPAxis::stLogarithmic);
    scaleA->axis()->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    scaleA->axis()->setNumberFormat("eb");
    scaleA->axis()->setNumberPrecision(0);
    scaleA->axis()->setLabel("softmax weight (log)");
  } else {
    for (int k = 0; k < 2; ++k) {
      m_map[k]->setDataScaleType(QCPAxis::stLinear);
      m_map[k]->setDataRange(QCPRange(lo, hi));
    }
    scaleA->setDataScaleType(QCPAxis::stLinear);
    scaleA->axis()->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    scaleA->axis()->setNumberFormat("gb");
    scaleA->axis()->setNumberPrecision(3);
    scaleA->axis()->setLabel("logit (scaled)");
  }
  scaleA->setDataRange(QCPRange(lo, hi));
  if (dmax <= 0) dmax = 1e-6;
  m_map[2]->setDataRange(QCPRange(-dmax, dmax));
  m_map[2]->colorScale()->setDataRange(QCPRange(-dmax, dmax));
  const QString lod = h.colStride > 1 || h.rowStride > 1
                          ? QString(" · level of detail: 1 query per %1 rows, keys %2-pooled per %3").arg(h.rowStride).arg(h.softmax ? "max" : "mean").arg(h.colStride)
                          : QString();
  m_titleEl->setText(QString("Attention L%1 · q head %2 → kv head %3 · %4 · %5%6")
                         .arg(layer)
                         .arg(qHead)
                         .arg(kvHead)
                         .arg(h.softmax ? "softmax weights" : "logits")
                         .arg(queryLabel)
                         .arg(lod));
  if (newShape) {
    m_syncing = true;
    for (int k = 0; k < 3; ++k) {
      m_rect[k]->axis(QCPAxis::atBottom)->setRange(-0.5, m_seq - 0.5);
      m_rect[k]->axis(QCPAxis::atLeft)->setRange(-0.5, m_seq - 0.5);
    }
    m_syncing = false;
  }
  requestReplot();
}

void AttentionView::zoomTo(double col0, double col1, double row0, double row1) {
  m_rect[0]->axis(QCPAxis::atBottom)->setRange(col0, col1);
  m_rect[0]->axis(QCPAxis::atLeft)->setRange(row0, row1);
  requestReplot();
}

void AttentionView::resetZoom() { zoomTo(-0.5, m_seq - 0.5, -0.5, m_seq - 0.5); }

void AttentionView::onRangeChanged() {
  if (m_lodTimer) m_lodTimer->start();
}

QString AttentionView::describe(double key, double query) const {
  const Heatmap& h = m_heat;
  if (!m_data || h.rows == 0) return {};
  const int i = static_cast<int>(std::floor((query + 0.5 - h.row0) / h.rowStride));
  const int j = static_cast<int>(std::floor((key + 0.5 - h.col0) / h.colStride));
  if (i < 0 || i >= h.rows || j < 0 || j >= h.cols) return {};
  const int qt = h.rowToken[static_cast<size_t>(i)];
  const int k0 = h.col0 + j * h.colStride, k1 = std::min(h.col1, k0 + h.colStride) - 1;
  QString keyPart = k0 == k1 ? QString("k %1 '%2'").arg(k0).arg(QString::fromStdString(m_data->tokenText(k0)))
                             : QString("k %1–%2 (%3 of %4)").arg(k0).arg(k1).arg(h.softmax ? "max" : "mean").arg(k1 - k0 + 1);
  QString s = QString("q %1 '%2' → %3").arg(qt).arg(QString::fromStdString(m_data->tokenText(qt))).arg(keyPart);
  const float e = h.at(h.exact, i, j), a = h.at(h.approx, i, j), d = h.at(h.diff, i, j);
  if (std::isnan(e)) return s + "   masked (causal: the key comes after the query)";
  return s + QString("   exact %1   TurboQuant %2   Δ %3").arg(e, 0, 'g', 4).arg(a, 0, 'g', 4).arg(d, 0, 'g', 3);
}

void AttentionView::onMouseMove(QMouseEvent* ev) {
  auto* r = m_plot->axisRectAt(ev->pos());
  int k = -1;
  for (int o = 0; o < 3; ++o)
    if (r == m_rect[o]) k = o;
  if (k < 0) return;
  const QString s = describe(m_rect[k]->axis(QCPAxis::atBottom)->pixelToCoord(ev->pos().x()), m_rect[k]->axis(QCPAxis::atLeft)->pixelToCoord(ev->pos().y()));
  if (s.isEmpty() || s == m_hoverEl->text()) return;
  m_hoverEl->setText(s);
  emit hoverText(s);
  requestReplot();
}

QString AttentionView::csv() const {
  QString out = "row_bin,query_token,query_text,key_begin,key_end,exact,turboquant,difference\n";
  const Heatmap& h = m_heat;
  out.reserve(static_cast<int>(h.rows) * h.cols * 40);
  for (int i = 0; i < h.rows; ++i) {
    const int qt = h.rowToken[static_cast<size_t>(i)];
    const QString qtext = m_data ? csvEscape(m_data->tokenText(qt)) : QString();
    for (int j = 0; j < h.cols; ++j) {
      const float e = h.at(h.exact, i, j);
      if (std::isnan(e)) continue;
      const int k0 = h.col0 + j * h.colStride;
      out += QString("%1,%2,%3,%4,%5,%6,%7,%8\n")
                 .arg(i)
                 .arg(qt)
                 .arg(qtext)
                 .arg(k0)
                 .arg(std::min(h.col1, k0 + h.colStride))
                 .arg(e, 0, 'g', 7)
                 .arg(h.at(h.approx, i, j), 0, 'g', 7)
                 .arg(h.at(h.diff, i, j), 0, 'g', 7);
    }
  }
  return out;
}

int AttentionView::dataPoints() const {
  int n = 0;
  for (float v : m_heat.exact) n += std::isnan(v) ? 0 : 1;
  return n;
}

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

// =============================================================== MemoryView
MemoryView::MemoryView(QWidget* parent) : PlotView("memory", "Memory", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  m_rect[0] = addPanel(m_plot, grid, 0, 0, "bytes per token per kv head", &m_sub[0]);
  m_rect[1] = addPanel(m_plot, grid, 0, 1, "KV cache at context", &m_sub[1]);
  m_rect[0]->axis(QCPAxis::atBottom)->setLabel("bits");
  m_rect[0]->axis(QCPAxis::atLeft)->setLabel("bytes / vector");
  bitsTicker(m_rect[0]->axis(QCPAxis::atBottom));
  m_rect[1]->axis(QCPAxis::atLeft)->setLabel("GiB (log)");
  setLogY(m_rect[1]);
  m_rect[1]->axis(QCPAxis::atLeft)->setNumberFormat("gb");
  m_legend = insetLegend(m_rect[0], Qt::AlignTop | Qt::AlignLeft);
  grid->setColumnStretchFactors({1, 1.3});
  finishLayout();
}

void MemoryView::setData(const Experiment& e, int d, size_t measuredK, size_t measuredV) {
  clearPanels(m_plot);
  m_legend->clearItems();
  m_points = 0;
  m_csv = "section,series,bits_or_model,bytes,gib,ratio_vs_fp16,ratio_vs_fp8\n";
  auto* r = m_rect[0];
  const int m = e.projDimFor(d);
  QVector<double> bits = iota(8, 1);
  struct S {
    QString name;
    QColor c;
    std::function<double(int)> f;
    Qt::PenStyle st;
  };
  const std::vector<S> ss = {
      {"keys MSE-only", modeColor(tq::KeyMode::Mse), [&](int b) { return double(tq::keyBytesPerVector(d, b, tq::KeyMode::Mse, 0)); }, Qt::SolidLine},
      {QString("keys MSE+QJL m=%1").arg(m), modeColor(tq::KeyMode::Prod), [&](int b) { return double(tq::keyBytesPerVector(d, b, tq::KeyMode::Prod, m)); }, Qt::SolidLine},
      {QString("keys QJL-only m=%1").arg(m), modeColor(tq::KeyMode::QjlOnly), [&](int b) { return double(tq::keyBytesPerVector(d, b, tq::KeyMode::QjlOnly, m)); }, Qt::DashLine},
      {"values (MSE)", kGreen, [&](int b) { return double(tq::valueBytesPerVector(d, b)); }, Qt::DotLine},
  };
  double ymax = 2.0 * d;
  for (const auto& s : ss) {
    QVector<double> y;
    for (int b = 1; b <= 8; ++b) {
      y << s.f(b);
      m_csv += QString("per_vector,%1,%2,%3,,,\n").arg(s.name).arg(b).arg(y.back());
      ++m_points;
    }
    ymax = std::max(ymax, *std::max_element(y.begin(), y.end()));
    addGraph(m_plot, r, bits, y, pen(s.c, 1.8, s.st), QCPScatterStyle(QCPScatterStyle::ssCircle, s.c, s.c, 4))->setName(s.name);
  }
  auto* f16 = addGraph(m_plot, r, {0.5, 8.5}, {2.0 * d, 2.0 * d}, pen(kGrey, 1.4, Qt::DashDotLine));
  f16->setName(QString("fp16 (%1 B)").arg(2 * d));
  auto* f8 = addGraph(m_plot, r, {0.5, 8.5}, {1.0 * d, 1.0 * d}, pen(kGrey, 1.4, Qt::DotLine));
  f8->setName(QString("fp8 (%1 B)").arg(d));
  for (int i = 0; i < m_plot->graphCount(); ++i) m_plot->graph(i)->addToLegend(m_legend);
  // current configuration, and what the engine's buffers actually held
  const double curK = double(tq::keyBytesPerVector(d, e.keyBits, e.keyMode, e.projDim(d)));
  const double curV = double(tq::valueBytesPerVector(d, e.valueBits));
  addGraph(m_plot, r, {double(e.keyBits)}, {curK}, QPen(Qt::black, 2), QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 2), Qt::NoBrush, 14), QCPGraph::lsNone);
  addGraph(m_plot, r, {double(e.valueBits)}, {curV}, QPen(Qt::black, 2), QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 2), Qt::NoBrush, 14), QCPGraph::lsNone);
  if (measuredK > 0) {
    auto* mk = addGraph(m_plot, r, {double(e.keyBits)}, {double(measuredK)}, QPen(kVermillion, 2), QCPScatterStyle(QCPScatterStyle::ssCross, QPen(kVermillion, 2), Qt::NoBrush, 10),
                        QCPGraph::lsNone);
    mk->setName("measured in the engine's buffers");
    mk->addToLegend(m_legend);
    if (measuredV > 0)
      addGraph(m_plot, r, {double(e.valueBits)}, {double(measuredV)}, QPen(kVermillion, 2), QCPScatterStyle(QCPScatterStyle::ssCross, QPen(kVermillion, 2), Qt::NoBrush, 10),
               QCPGraph::lsNone);
  }
  r->axis(QCPAxis::atLeft)->setRange(0, ymax * 1.08);
  m_sub[0]->setText(QString("bytes per token per kv head (d=%1)\nK%2 %3: %4 B (buffers: %5 B) · V%6: %7 B (buffers: %8 B)")
                        .arg(d)
                        .arg(e.keyBits)
                        .arg(keyModeLabel(e.keyMode))
                        .arg(curK)
                        .arg(measuredK)
                        .arg(e.valueBits)
                        .arg(curV)
                        .arg(measuredV));

  // KV cache totals per model preset
  auto* r2 = m_rect[1];
  auto* group = new QCPBarsGroup(m_plot);
  QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
  QVector<double> keys, vf16, vf8, vtq;
  const auto& presets = tq::modelPresets();
  double gmin = 1e300, gmax = 0;
  QString chosen;
  for (size_t i = 0; i < presets.size(); ++i) {
    const auto& p = presets[i];
    tq::MemoryConfig mc;
    mc.layers = p.layers;
    mc.kvHeads = p.kvHeads;
    mc.headDim = p.headDim;
    mc.tokens = e.context;
    mc.keyBits = e.keyBits;
    mc.valueBits = e.valueBits;
    mc.keyMode = e.keyMode;
    mc.projDim = e.projDim(p.headDim);
    const auto rep = tq::memoryModel(mc);
    const double gib = 1024.0 * 1024.0 * 1024.0;
    keys << double(i + 1);
    vf16 << rep.fp16Bytes / gib;
    vf8 << rep.fp8Bytes / gib;
    vtq << rep.totalBytes / gib;
    gmin = std::min(gmin, rep.totalBytes / gib);
    gmax = std::max(gmax, rep.fp16Bytes / gib);
    const bool isChosen = QString::fromStdString(p.id).compare(e.modelPreset, Qt::CaseInsensitive) == 0;
    QString label = QString::fromStdString(p.name);
    const int dash = label.lastIndexOf('-');
    if (dash > 0) label = label.left(dash) + "\n" + label.mid(dash + 1);
    ticker->addTick(double(i + 1), label + (isChosen ? "\n◆ chosen" : ""));
    m_csv += QString("kv_cache,%1,%2,%3,%4,%5,%6\n").arg("turboquant").arg(QString::fromStdString(p.id)).arg(rep.totalBytes, 0, 'f', 0).arg(rep.totalBytes / gib, 0, 'g', 6)
                 .arg(rep.ratioVsFp16, 0, 'g', 4).arg(rep.ratioVsFp8, 0, 'g', 4);
    m_csv += QString("kv_cache,fp16,%1,%2,%3,1,\n").arg(QString::fromStdString(p.id)).arg(rep.fp16Bytes, 0, 'f', 0).arg(rep.fp16Bytes / gib, 0, 'g', 6);
    m_csv += QString("kv_cache,fp8,%1,%2,%3,,1\n").arg(QString::fromStdString(p.id)).arg(rep.fp8Bytes, 0, 'f', 0).arg(rep.fp8Bytes / gib, 0, 'g', 6);
    m_points += 3;
    if (isChosen)
      chosen = QString("%1: %2 GiB fp16 → %3 GiB (×%4 vs fp16, ×%5 vs fp8)")
                   .arg(QString::fromStdString(p.name))
                   .arg(rep.fp16Bytes / gib, 0, 'g', 3)
                   .arg(rep.totalBytes / gib, 0, 'g', 3)
                   .arg(rep.ratioVsFp16, 0, 'f', 1)
                   .arg(rep.ratioVsFp8, 0, 'f', 1);
    auto* t = new QCPItemText(m_plot);
    t->setClipAxisRect(r2);
    t->setClipToAxisRect(false);
    t->position->setAxes(r2->axis(QCPAxis::atBottom), r2->axis(QCPAxis::atLeft));
    t->position->setCoords(double(i + 1) + 0.27, rep.totalBytes / gib);
    t->setPositionAlignment(Qt::AlignHCenter | Qt::AlignBottom);
    t->setFont(baseFont(7.5, true));
    t->setColor(kBlue);
    t->setText(QString("×%1").arg(rep.ratioVsFp16, 0, 'f', 1));
  }
  const QColor cols[3] = {QColor(150, 150, 150), QColor(200, 200, 200), kBlue};
  const char* names[3] = {"fp16", "fp8", "TurboQuant (current)"};
  const QVector<double>* vals[3] = {&vf16, &vf8, &vtq};
  for (int k = 0; k < 3; ++k) {
    auto* b = new QCPBars(r2->axis(QCPAxis::atBottom), r2->axis(QCPAxis::atLeft));
    b->setData(keys, *vals[k]);
    b->setWidth(0.26);
    b->setBarsGroup(group);
    b->setBrush(cols[k]);
    b->setPen(QPen(cols[k].darker(130)));
    b->setName(names[k]);
    b->setBaseValue(gmin / 3);  // = the axis floor: bars never reach outside the rect (SVG has no clip there)
    b->addToLegend(m_legend);
  }
  r2->axis(QCPAxis::atBottom)->setTicker(ticker);
  r2->axis(QCPAxis::atBottom)->setRange(0.4, presets.size() + 0.75);
  r2->axis(QCPAxis::atBottom)->setTickLabelRotation(0);
  r2->axis(QCPAxis::atLeft)->setRange(gmin / 3, gmax * 4);
  m_sub[1]->setText(QString("KV cache at %L1 tokens, all layers, K%2/V%3 %4\n%5")
                        .arg(e.context)
                        .arg(e.keyBits)
                        .arg(e.valueBits)
                        .arg(keyModeLabel(e.keyMode))
                        .arg(chosen.isEmpty() ? QString("model presets") : chosen));
  applyStyle();
  requestReplot();
}

QString MemoryView::csv() const { return m_csv; }
int MemoryView::dataPoints() const { return m_points; }

// =============================================================== DistortionView
DistortionView::DistortionView(QWidget* parent) : PlotView("distortion", "Distortion versus bits", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  m_rect = addPanel(m_plot, grid, 0, 0, "‖x − x̂‖² / ‖x‖²  (MSE stage)", nullptr);
  m_rect->axis(QCPAxis::atBottom)->setLabel("bits per coordinate");
  m_rect->axis(QCPAxis::atLeft)->setLabel("normalised distortion (log)");
  bitsTicker(m_rect->axis(QCPAxis::atBottom));
  setLogY(m_rect);
  m_legend = insetLegend(m_rect, Qt::AlignTop | Qt::AlignRight);
  finishLayout();
}

void DistortionView::setData(const Distortion& d, int currentBits) {
  clearPanels(m_plot);
  m_legend->clearItems();
  QVector<double> x;
  for (int b : d.bits) x << b;
  addGraph(m_plot, m_rect, x, vec(d.upper), pen(kVermillion, 1.6, Qt::DashLine))->setName("paper upper bound (√3·π/2)·4⁻ᵇ");
  addGraph(m_plot, m_rect, x, vec(d.theory), pen(kBlack, 2.2), QCPScatterStyle(QCPScatterStyle::ssNone))->setName(QString("theory: Lloyd-Max on the sphere marginal, d=%1").arg(d.dim));
  addGraph(m_plot, m_rect, x, vec(d.lower), pen(kBlue, 1.6, Qt::DashLine))->setName("paper lower bound 4⁻ᵇ");
  addGraph(m_plot, m_rect, x, vec(d.measuredSphere), pen(kGreen, 1.2), QCPScatterStyle(QCPScatterStyle::ssSquare, kGreen, Qt::white, 7))
      ->setName("measured: random unit vectors");
  addGraph(m_plot, m_rect, x, vec(d.measuredData), pen(kOrange, 1.2), QCPScatterStyle(QCPScatterStyle::ssDisc, kOrange, kOrange, 7))
      ->setName(d.dataVectors < d.headVectors ? QString("measured: %1 of the %2 keys of this head (evenly spaced)").arg(d.dataVectors).arg(d.headVectors)
                                              : QString("measured: keys of this head"));
  for (int i = 0; i < m_plot->graphCount(); ++i) m_plot->graph(i)->addToLegend(m_legend);
  const int ci = currentBits - 1;
  if (ci >= 0 && ci < static_cast<int>(d.measuredData.size())) {
    auto* line = new QCPItemStraightLine(m_plot);
    line->setClipAxisRect(m_rect);
    line->point1->setAxes(m_rect->axis(QCPAxis::atBottom), m_rect->axis(QCPAxis::atLeft));
    line->point2->setAxes(m_rect->axis(QCPAxis::atBottom), m_rect->axis(QCPAxis::atLeft));
    line->point1->setCoords(currentBits, 1e-6);
    line->point2->setCoords(currentBits, 1);
    line->setPen(QPen(kGrey, 1, Qt::DotLine));
    addGraph(m_plot, m_rect, {double(currentBits)}, {d.measuredData[static_cast<size_t>(ci)]}, QPen(Qt::black, 2),
             QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 2), Qt::NoBrush, 15), QCPGraph::lsNone);
    auto* t = new QCPItemText(m_plot);
    t->setClipAxisRect(m_rect);
    t->position->setAxes(m_rect->axis(QCPAxis::atBottom), m_rect->axis(QCPAxis::atLeft));
    t->position->setCoords(currentBits, d.measuredData[static_cast<size_t>(ci)]);
    t->setPositionAlignment(Qt::AlignRight | Qt::AlignTop);
    t->setPadding(QMargins(0, 10, 12, 0));
    t->setFont(baseFont(8.5, true));
    t->setText(QString("%1 bits: measured %2, theory %3").arg(currentBits).arg(d.measuredData[static_cast<size_t>(ci)], 0, 'g', 3).arg(d.theory[static_cast<size_t>(ci)], 0, 'g', 3));
  }
  double lo = 1e300, hi = 0;
  for (const auto* v : {&d.theory, &d.upper, &d.lower, &d.measuredData, &d.measuredSphere})
    for (double y : *v)
      if (y > 0) lo = std::min(lo, y), hi = std::max(hi, y);
  if (hi > 0) m_rect->axis(QCPAxis::atLeft)->setRange(lo / 2, hi * 3);
  m_csv = "bits,theory,paper_upper,paper_lower,measured_keys,measured_sphere\n";
  m_points = 0;
  for (size_t i = 0; i < d.bits.size(); ++i) {
    m_csv += QString("%1,%2,%3,%4,%5,%6\n").arg(d.bits[i]).arg(d.theory[i], 0, 'g', 6).arg(d.upper[i], 0, 'g', 6).arg(d.lower[i], 0, 'g', 6)
                 .arg(d.measuredData[i], 0, 'g', 6).arg(d.measuredSphere[i], 0, 'g', 6);
    m_points += 5;
  }
  applyStyle();
  requestReplot();
}

QString DistortionView::csv() const { return m_csv; }
int DistortionView::dataPoints() const { return m_points; }

// =============================================================== EstimatorView
EstimatorView::EstimatorView(QWidget* parent) : PlotView("estimator", "Inner-product estimator: bias and variance", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  m_rect[0] = addPanel(m_plot, grid, 0, 0, "estimated vs exact ⟨q, k⟩", &m_sub[0]);
  m_rect[1] = addPanel(m_plot, grid, 0, 1, "error = estimate − exact", &m_sub[1]);
  m_rect[0]->axis(QCPAxis::atBottom)->setLabel("exact ⟨q, k⟩");
  m_rect[0]->axis(QCPAxis::atLeft)->setLabel("estimated");
  m_rect[1]->axis(QCPAxis::atBottom)->setLabel("estimate − exact ⟨q, k⟩");
  m_rect[1]->axis(QCPAxis::atLeft)->setLabel("density");
  m_legend = insetLegend(m_rect[1], Qt::AlignTop | Qt::AlignRight);
  m_rect[0]->setRangeDrag(Qt::Horizontal | Qt::Vertical);
  m_rect[0]->setRangeZoom(Qt::Horizontal | Qt::Vertical);
  m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
  finishLayout();
}

void EstimatorView::setData(const std::vector<EstimatorSeries>& series, tq::KeyMode current, int bits) {
  clearPanels(m_plot);
  m_legend->clearItems();
  m_points = 0;
  m_series = series;
  double lo = 1e300, hi = -1e300, spread = 0;
  for (const auto& s : series) {
    for (float v : s.exact) lo = std::min(lo, double(v)), hi = std::max(hi, double(v));
    spread = std::max(spread, std::fabs(s.stats.bias) + 4 * std::sqrt(std::max(0.0, s.stats.variance)));
  }
  if (spread <= 0) spread = 1;
  // draw the current mode last (on top)
  std::vector<const EstimatorSeries*> order;
  for (const auto& s : series)
    if (s.mode != current) order.push_back(&s);
  for (const auto& s : series)
    if (s.mode == current) order.push_back(&s);
  const int nb = 61;
  const double w = 2 * spread / nb;
  for (const auto* s : order) {
    const bool cur = s->mode == current;
    const QColor c = modeColor(s->mode);
    const size_t n = s->exact.size();
    const size_t stride = std::max<size_t>(1, n / 2500);
    QVector<double> x, y;
    for (size_t i = 0; i < n; i += stride) {
      x << s->exact[i];
      y << s->estimate[i];
    }
    m_points += static_cast<int>(n);
    auto* g = addGraph(m_plot, m_rect[0], x, y, Qt::NoPen, QCPScatterStyle(QCPScatterStyle::ssDisc, withAlpha(c, cur ? 150 : 70), cur ? 4.5 : 3.5), QCPGraph::lsNone);
    g->setAdaptiveSampling(true);
    // error histogram
    QVector<double> hx(nb), hy(nb, 0);
    for (int b = 0; b < nb; ++b) hx[b] = -spread + (b + 0.5) * w;
    for (size_t i = 0; i < n; ++i) {
      const int b = static_cast<int>(std::floor((s->estimate[i] - s->exact[i] + spread) / w));
      if (b >= 0 && b < nb) hy[b] += 1.0 / (double(n) * w);
    }
    auto* h = addGraph(m_plot, m_rect[1], hx, hy, pen(c, cur ? 2.6 : 1.4, s->mode == tq::KeyMode::QjlOnly ? Qt::DashLine : Qt::SolidLine), QCPScatterStyle(),
                       QCPGraph::lsStepCenter);
    h->setBrush(withAlpha(c, cur ? 50 : 20));
    h->setName(QString("%1%2: bias %3, sd %4, slope %5")
                   .arg(QString::fromStdString(s->label))
                   .arg(cur ? " (current)" : "")
                   .arg(s->stats.bias, 0, 'g', 2)
                   .arg(std::sqrt(std::max(0.0, s->stats.variance)), 0, 'g', 2)
                   .arg(s->stats.slope, 0, 'f', 3));
    h->addToLegend(m_legend);
  }
  if (hi > lo) {
    const double pad = (hi - lo) * 0.05;
    addGraph(m_plot, m_rect[0], {lo - pad, hi + pad}, {lo - pad, hi + pad}, pen(kGrey, 1.2, Qt::DashLine))->setName("y = x");
    m_rect[0]->axis(QCPAxis::atBottom)->setRange(lo - pad, hi + pad);
    m_rect[0]->axis(QCPAxis::atLeft)->setRange(lo - pad - spread / 2, hi + pad + spread / 2);
  }
  auto* zero = new QCPItemStraightLine(m_plot);
  zero->setClipAxisRect(m_rect[1]);
  zero->point1->setAxes(m_rect[1]->axis(QCPAxis::atBottom), m_rect[1]->axis(QCPAxis::atLeft));
  zero->point2->setAxes(m_rect[1]->axis(QCPAxis::atBottom), m_rect[1]->axis(QCPAxis::atLeft));
  zero->point1->setCoords(0, 0);
  zero->point2->setCoords(0, 1);
  zero->setPen(QPen(kGrey, 1, Qt::DotLine));
  m_rect[1]->axis(QCPAxis::atBottom)->setRange(-spread, spread);
  m_rect[1]->axis(QCPAxis::atLeft)->rescale(true);
  const auto yr = m_rect[1]->axis(QCPAxis::atLeft)->range();
  m_rect[1]->axis(QCPAxis::atLeft)->setRange(0, yr.upper * 1.35);
  const size_t pairs = series.empty() ? 0 : series.front().exact.size();
  m_sub[0]->setText(QString("estimated vs exact ⟨q, k⟩ at %1 bits · %2 (query, key) pairs, causal").arg(bits).arg(pairs));
  m_sub[1]->setText("error = estimate − exact: MSE-only shrinks (biased), QJL is unbiased but noisier");
  applyStyle();
  requestReplot();
}

QString EstimatorView::csv() const {
  QString out = "mode,proj_dim_label,exact,estimate\n";
  for (const auto& s : m_series)
    for (size_t i = 0; i < s.exact.size(); ++i)
      out += QString("%1,%2,%3,%4\n").arg(tq::keyModeName(s.mode)).arg(QString::fromStdString(s.label)).arg(s.exact[i], 0, 'g', 6).arg(s.estimate[i], 0, 'g', 6);
  return out;
}
int EstimatorView::dataPoints() const { return m_points; }

// =============================================================== HowItWorksView
HowItWorksView::HowItWorksView(QWidget* parent) : PlotView("how", "How it works: one real key through TurboQuant", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  const char* titles[6] = {"1 · the key x", "2 · rotated unit coordinates y = R x/‖x‖", "3 · codebook cells: y and its centroid",
                           "4 · reconstruction and residual", "5 · QJL signs of S·r", "6 · estimate of ⟨q, x⟩ against the truth"};
  for (int i = 0; i < 6; ++i) m_rect[i] = addPanel(m_plot, grid, i / 3, i % 3, titles[i], &m_sub[i]);
  m_rect[0]->axis(QCPAxis::atBottom)->setLabel("coordinate");
  m_rect[1]->axis(QCPAxis::atBottom)->setLabel("coordinate value");
  m_rect[1]->axis(QCPAxis::atLeft)->setLabel("density");
  m_rect[2]->axis(QCPAxis::atBottom)->setLabel("coordinate");
  m_rect[3]->axis(QCPAxis::atBottom)->setLabel("coordinate");
  m_rect[4]->axis(QCPAxis::atBottom)->setLabel("QJL row");
  m_rect[5]->axis(QCPAxis::atBottom)->setLabel("estimate of ⟨q, x⟩ over independent seeds");
  m_rect[5]->axis(QCPAxis::atLeft)->setLabel("count");
  m_legend[0] = insetLegend(m_rect[0], Qt::AlignTop | Qt::AlignRight);
  m_legend[1] = insetLegend(m_rect[1], Qt::AlignTop | Qt::AlignRight);
  m_legend[2] = insetLegend(m_rect[2], Qt::AlignTop | Qt::AlignRight);
  m_legend[3] = insetLegend(m_rect[3], Qt::AlignTop | Qt::AlignRight);
  m_legend[5] = insetLegend(m_rect[5], Qt::AlignTop | Qt::AlignRight);
  finishLayout();
}

void HowItWorksView::setData(const HowItWorks& h, int keyBits) {
  clearPanels(m_plot);
  for (auto* l : m_legend)
    if (l) l->clearItems();
  m_points = 0;
  const int d = h.dim;
  const QVector<double> idx = iota(d);
  auto* group = new QCPBarsGroup(m_plot);
  auto bars = [&](QCPAxisRect* r, const QVector<double>& x, const QVector<double>& y, const QColor& c, const QString& name, double width, QCPBarsGroup* g) {
    auto* b = new QCPBars(r->axis(QCPAxis::atBottom), r->axis(QCPAxis::atLeft));
    b->setData(x, y, true);
    b->setWidth(width);
    b->setBrush(c);
    b->setPen(QPen(c.darker(140)));
    b->setName(name);
    if (g) b->setBarsGroup(g);
    return b;
  };
  // 1: x
  bars(m_rect[0], idx, vecf(h.x), kBlue, "x", 0.8, nullptr)->addToLegend(m_legend[0]);
  m_sub[0]->setText(QString("1 · the key x of token %1 '%2'\nkv head %3 · ‖x‖ = %4").arg(h.token).arg(QString::fromStdString(h.tokenText)).arg(h.kvHead).arg(h.norm, 0, 'g', 4));
  // 2: rotated coordinates + density + cells
  {
    auto* r = m_rect[1];
    auto* hb = bars(r, vec(h.histX), vec(h.histDensity), QColor(190, 190, 190), "all keys of this head", h.histX.size() > 1 ? (h.histX[1] - h.histX[0]) : 0.05, nullptr);
    hb->setPen(Qt::NoPen);
    hb->addToLegend(m_legend[1]);
    addGraph(m_plot, r, vec(h.densityX), vec(h.densityY), pen(kBlack, 2))->setName(QString("sphere marginal f_%1(t)").arg(d));
    m_plot->graph(m_plot->graphCount() - 1)->addToLegend(m_legend[1]);
    double ymax = 0;
    for (double v : h.densityY) ymax = std::max(ymax, v);
    for (double v : h.histDensity) ymax = std::max(ymax, v);
    if (!h.boundaries.empty()) {
      QVector<double> bx = vec(h.boundaries), by(bx.size(), ymax * 1.1);
      auto* gb = addGraph(m_plot, r, bx, by, pen(kVermillion, 1, Qt::DashLine), QCPScatterStyle(), QCPGraph::lsImpulse);
      gb->setName(QString("cell boundaries (%1 bits)").arg(h.mseBits));
      gb->addToLegend(m_legend[1]);
      QVector<double> cx = vec(h.centroids), cy(cx.size(), 0);
      auto* gc = addGraph(m_plot, r, cx, cy, Qt::NoPen, QCPScatterStyle(QCPScatterStyle::ssTriangle, kVermillion, kVermillion, 7), QCPGraph::lsNone);
      gc->setName("centroids");
      gc->addToLegend(m_legend[1]);
    }
    QVector<double> ry = vecf(h.rotated), rz(ry.size(), ymax * 0.05);
    auto* gr = addGraph(m_plot, r, ry, rz, Qt::NoPen, QCPScatterStyle(QCPScatterStyle::ssCross, QPen(kBlue, 2), Qt::NoBrush, 9), QCPGraph::lsNone);
    gr->setName("this key's coordinates");
    gr->addToLegend(m_legend[1]);
    if (!h.densityX.empty()) r->axis(QCPAxis::atBottom)->setRange(h.densityX.front(), h.densityX.back());
    m_sub[1]->setText(QString("2 · rotated unit coordinates y = R x/‖x‖\nvs the sphere marginal f_%1 and the codebook cells").arg(d));
    r->axis(QCPAxis::atLeft)->setRange(0, ymax * 1.45);
    m_points += static_cast<int>(h.histX.size() + h.densityX.size() + h.rotated.size());
  }
  // 3: coordinates and their centroids
  {
    auto* r = m_rect[2];
    addGraph(m_plot, r, idx, vecf(h.rotated), Qt::NoPen, QCPScatterStyle(QCPScatterStyle::ssDisc, kBlue, kBlue, 7), QCPGraph::lsNone)->setName("rotated coordinate y_j");
    m_plot->graph(m_plot->graphCount() - 1)->addToLegend(m_legend[2]);
    if (!h.codeValue.empty()) {
      auto* g = addGraph(m_plot, r, idx, vecf(h.codeValue), pen(kVermillion, 1.2), QCPScatterStyle(QCPScatterStyle::ssSquare, kVermillion, Qt::white, 7), QCPGraph::lsNone);
      g->setName(QString("centroid c[idx_j] (%1 bits)").arg(h.mseBits));
      g->addToLegend(m_legend[2]);
      // a thin line between each coordinate and its centroid: the quantization error
      QVector<double> ex, ey;
      for (int j = 0; j < d; ++j) {
        ex << j << j << std::nan("");
        ey << h.rotated[static_cast<size_t>(j)] << h.codeValue[static_cast<size_t>(j)] << std::nan("");
      }
      auto* ge = addGraph(m_plot, r, ex, ey, pen(kGrey, 1), QCPScatterStyle(), QCPGraph::lsLine);
      ge->setData(ex, ey, true);
    }
    r->axis(QCPAxis::atBottom)->setRange(-0.8, d - 0.2);
    r->axis(QCPAxis::atLeft)->rescale(true);
    const auto yr = r->axis(QCPAxis::atLeft)->range();
    fitY(r, yr.lower, yr.upper + (yr.upper - yr.lower) * 0.5);
    m_sub[2]->setText(h.mseBits > 0 ? QString("3 · codebook cells: each y_j → nearest centroid\n%1 centroids = %2 bits per coordinate").arg(h.centroids.size()).arg(h.mseBits)
                                    : QString("3 · codebook cells\nQJL-only: no MSE stage, no codebook"));
  }
  // 4: reconstruction and residual
  {
    auto* r = m_rect[3];
    bars(r, idx, vecf(h.x), withAlpha(kBlue, 160), "x", 0.28, group)->addToLegend(m_legend[3]);
    bars(r, idx, vecf(h.xMse), withAlpha(kOrange, 200), "x_mse (MSE stage)", 0.28, group)->addToLegend(m_legend[3]);
    bars(r, idx, vecf(h.residual), withAlpha(kVermillion, 200), "residual r = x − x_mse", 0.28, group)->addToLegend(m_legend[3]);
    r->axis(QCPAxis::atBottom)->setRange(-0.8, d - 0.2);
    double lo = 0, hi = 0;
    for (const auto* v : {&h.x, &h.xMse, &h.residual})
      for (float f : *v) lo = std::min(lo, double(f)), hi = std::max(hi, double(f));
    fitY(r, lo, hi + (hi - lo) * 0.6);
    m_sub[3]->setText(QString("4 · reconstruction and residual\n‖r‖/‖x‖ = %1").arg(h.norm > 0 ? h.residualNorm / h.norm : 0.0f, 0, 'g', 3));
    m_points += 3 * d;
  }
  // 5: QJL signs
  {
    auto* r = m_rect[4];
    if (!h.signs.empty()) {
      QVector<double> sx = iota(static_cast<int>(h.signs.size())), pos, neg, px, nx;
      for (size_t i = 0; i < h.signs.size(); ++i) (h.signs[i] > 0 ? px : nx) << double(i), (h.signs[i] > 0 ? pos : neg) << h.signs[i];
      bars(r, px, pos, kBlue, "+1", 0.8, nullptr);
      bars(r, nx, neg, kVermillion, "−1", 0.8, nullptr);
      r->axis(QCPAxis::atBottom)->setRange(-0.8, double(h.signs.size()) - 0.2);
      m_sub[4]->setText(QString("5 · QJL signs of S·r\nm = %1 sign bits + ‖r‖ = %2 (fp16)").arg(h.signs.size()).arg(h.residualNorm, 0, 'g', 3));
      m_points += static_cast<int>(h.signs.size());
    } else {
      m_sub[4]->setText("5 · QJL signs of S·r\nMSE-only mode: no QJL stage");
      r->axis(QCPAxis::atBottom)->setRange(0, 1);
    }
    r->axis(QCPAxis::atLeft)->setRange(-1.4, 1.4);
  }
  // 6: estimate vs truth over seeds
  {
    auto* r = m_rect[5];
    double lo = h.truth, hi = h.truth;
    for (const auto* v : {&h.trialsMse, &h.trialsProd})
      for (double t : *v) lo = std::min(lo, t), hi = std::max(hi, t);
    const double span = std::max(1e-9, hi - lo) * 1.1;
    const int nb = 31;
    const double w = span / nb, start = (lo + hi) / 2 - span / 2;
    auto hist = [&](const std::vector<double>& v, const QColor& c, const QString& name, Qt::PenStyle st) {
      QVector<double> hx(nb), hy(nb, 0);
      for (int b = 0; b < nb; ++b) hx[b] = start + (b + 0.5) * w;
      double mean = 0;
      for (double t : v) {
        const int b = std::clamp(static_cast<int>(std::floor((t - start) / w)), 0, nb - 1);
        hy[b] += 1;
        mean += t;
      }
      mean /= std::max<size_t>(1, v.size());
      auto* g = addGraph(m_plot, r, hx, hy, pen(c, 2, st), QCPScatterStyle(), QCPGraph::lsStepCenter);
      g->setBrush(withAlpha(c, 40));
      g->setName(QString("%1: mean %2").arg(name).arg(mean, 0, 'g', 4));
      g->addToLegend(m_legend[5]);
      m_points += nb;
      return *std::max_element(hy.begin(), hy.end());
    };
    double ymax = std::max(hist(h.trialsMse, kBlack, QString("MSE-only %1 bits").arg(keyBits), Qt::SolidLine),
                           hist(h.trialsProd, kBlue, QString("MSE+QJL %1 bits").arg(keyBits), Qt::SolidLine));
    auto* t = addGraph(m_plot, r, {h.truth}, {ymax * 1.15}, pen(kVermillion, 2.5), QCPScatterStyle(), QCPGraph::lsImpulse);
    t->setName(QString("truth ⟨q, x⟩ = %1").arg(h.truth, 0, 'g', 4));
    t->addToLegend(m_legend[5]);
    r->axis(QCPAxis::atBottom)->setRange(start, start + span);
    r->axis(QCPAxis::atLeft)->setRange(0, ymax * 1.9);
    m_sub[5]->setText(QString("6 · estimate of ⟨q, x⟩ = %1 over %4 seeds\nthis seed: MSE-only %2 · MSE+QJL %3").arg(h.truth, 0, 'g', 4).arg(h.estimateMse, 0, 'g', 4).arg(h.estimateProd, 0, 'g', 4)
                          .arg(h.trialsMse.size()));
  }
  m_rect[0]->axis(QCPAxis::atBottom)->setRange(-0.8, d - 0.2);
  {
    double lo = 0, hi = 0;
    for (float f : h.x) lo = std::min(lo, double(f)), hi = std::max(hi, double(f));
    fitY(m_rect[0], lo, hi + (hi - lo) * 0.3);
  }
  m_csv = "coordinate,x,rotated_unit,centroid,x_mse,residual\n";
  for (int j = 0; j < d; ++j) {
    const auto J = static_cast<size_t>(j);
    m_csv += QString("%1,%2,%3,%4,%5,%6\n").arg(j).arg(h.x[J], 0, 'g', 6).arg(h.rotated[J], 0, 'g', 6).arg(h.codeValue.empty() ? 0.0f : h.codeValue[J], 0, 'g', 6)
                 .arg(h.xMse[J], 0, 'g', 6).arg(h.residual[J], 0, 'g', 6);
  }
  m_csv += "\nqjl_row,sign\n";
  for (size_t i = 0; i < h.signs.size(); ++i) m_csv += QString("%1,%2\n").arg(i).arg(h.signs[i]);
  m_csv += QString("\ntruth,estimate_mse,estimate_prod\n%1,%2,%3\n").arg(h.truth, 0, 'g', 6).arg(h.estimateMse, 0, 'g', 6).arg(h.estimateProd, 0, 'g', 6);
  m_points += d;
  applyStyle();
  requestReplot();
}

QString HowItWorksView::csv() const { return m_csv; }
int HowItWorksView::dataPoints() const { return m_points; }

// =============================================================== export
bool parseFigureFormat(const QString& s, FigureFormat* f) {
  const QString l = s.toLower().trimmed();
  if (l == "png") *f = FigureFormat::Png;
  else if (l == "svg") *f = FigureFormat::Svg;
  else if (l == "pdf") *f = FigureFormat::Pdf;
  else return false;
  return true;
}

QString figureSuffix(FigureFormat f) { return f == FigureFormat::Png ? "png" : f == FigureFormat::Svg ? "svg" : "pdf"; }

bool saveFigure(PlotView* view, const QString& path, FigureFormat format, QSize size, int dpi, QString* error) {
  auto fail = [&](const QString& m) {
    if (error) *error = m;
    return false;
  };
  if (!view) return fail("no view");
  if (view->outdated()) return fail(QString("the %1 view is out of date (%2): it is not exported").arg(view->id(), view->outdatedReason()));
  view->clearTransient();
  if (size.width() < 16 || size.height() < 16 || size.width() > 20000 || size.height() > 20000) return fail("figure size must be 16..20000 pixels");
  if (dpi < 24 || dpi > 2400) return fail("DPI must be 24..2400");
  QCustomPlot* p = view->plot();
  const double s = dpi / 96.0;  // layout at 96 dpi, scaled so text keeps its physical size
  const int lw = static_cast<int>(std::ceil(size.width() / s)), lh = static_cast<int>(std::ceil(size.height() / s));
  if (format == FigureFormat::Png) {
    QImage img(size, QImage::Format_ARGB32);
    img.fill(Qt::white);
    {
      QCPPainter painter(&img);
      painter.setRenderHint(QPainter::Antialiasing);
      painter.scale(s, s);
      p->toPainter(&painter, lw, lh);
    }
    const int dpm = static_cast<int>(std::lround(dpi / 0.0254));
    img.setDotsPerMeterX(dpm);
    img.setDotsPerMeterY(dpm);
    if (!img.save(path, "PNG")) return fail("cannot write " + path);
  } else if (format == FigureFormat::Svg) {
    QSvgGenerator gen;
    gen.setFileName(path);
    gen.setSize(size);
    gen.setViewBox(QRect(QPoint(0, 0), size));
    gen.setResolution(96);
    gen.setTitle(view->title());
    gen.setDescription(view->caption());
    QCPPainter painter;
    if (!painter.begin(&gen)) return fail("cannot write " + path);
    painter.scale(s, s);
    p->toPainter(&painter, lw, lh);
    painter.end();
  } else {
    QPdfWriter pdf(path);
    pdf.setResolution(96);
    pdf.setPageSize(QPageSize(QSizeF(size.width() * 72.0 / dpi, size.height() * 72.0 / dpi), QPageSize::Point, QString(), QPageSize::ExactMatch));
    pdf.setPageMargins(QMarginsF(0, 0, 0, 0));
    pdf.setTitle(view->title());
    pdf.setCreator("TurboQuant Studio");
    QCPPainter painter;
    if (!painter.begin(&pdf)) return fail("cannot write " + path);
    painter.setMode(QCPPainter::pmVectorized);
    painter.setMode(QCPPainter::pmNoCaching);
    p->toPainter(&painter, pdf.width(), pdf.height());
    painter.end();
  }
  if (QFileInfo(path).size() <= 0) return fail("nothing was written to " + path);
  return true;
}

bool saveCsv(PlotView* view, const QString& path, QString* error) {
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
    if (error) *error = "cannot write " + path + ": " + f.errorString();
    return false;
  }
  const QByteArray head = ("# " + view->title() + "\n# " + view->caption() + "\n").toUtf8();
  f.write(head);
  f.write(view->csv().toUtf8());
  return true;
}

}  // namespace tq::ui
