// SPDX-License-Identifier: GPL-3.0-or-later
// AttentionView: exact vs TurboQuant attention heatmaps and their difference (linked zoom, level of detail).
#include "attention_view.h"

#include <QTimer>
#include <QToolTip>
#include <algorithm>
#include <cmath>

#include "plot_common.h"

namespace tq::ui {

namespace {
const QString kHoverHint = QStringLiteral("hover a cell for token text and values · wheel: zoom · drag: pan (all three linked)");
}  // namespace

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
    // at a million tokens six-digit tick labels would run together: fewer ticks
    x->ticker()->setTickCount(4);
    y->ticker()->setTickCount(5);
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

void AttentionView::setMarkedToken(int token) {
  if (m_markLines.empty()) {
    // created once (setData keeps its items), a dashed row and column per map
    for (int k = 0; k < 3; ++k)
      for (int dir = 0; dir < 2; ++dir) {
        auto* l = new QCPItemStraightLine(m_plot);
        l->setClipAxisRect(m_rect[k]);
        l->point1->setAxes(m_rect[k]->axis(QCPAxis::atBottom), m_rect[k]->axis(QCPAxis::atLeft));
        l->point2->setAxes(m_rect[k]->axis(QCPAxis::atBottom), m_rect[k]->axis(QCPAxis::atLeft));
        l->setPen(QPen(QColor(255, 60, 60, 200), 1.2, Qt::DashLine));
        l->setSelectable(false);
        m_markLines.push_back(l);
      }
  }
  m_marked = token;
  for (size_t i = 0; i < m_markLines.size(); ++i) {
    auto* l = m_markLines[i];
    l->setVisible(token >= 0);
    if (i % 2 == 0) {  // the query row
      l->point1->setCoords(0, token);
      l->point2->setCoords(1, token);
    } else {  // the key column
      l->point1->setCoords(token, 0);
      l->point2->setCoords(token, 1);
    }
  }
  requestReplot();
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

}  // namespace tq::ui
