// SPDX-License-Identifier: GPL-3.0-or-later
// AttentionView: exact vs TurboQuant attention heatmaps and their difference (linked zoom, level of detail).
#include "attention_view.h"

#include <QTimer>
#include <QToolTip>
#include <algorithm>
#include <cmath>
#include <limits>

#include "plot_common.h"

namespace tq::ui {

namespace {
const QString kHoverHint = QStringLiteral("hover a cell for token text and values · wheel: zoom · drag: pan (all panels linked)");
}  // namespace

// =============================================================== AttentionView
AttentionView::AttentionView(QWidget* parent) : PlotView("attention", "Attention: exact vs TurboQuant", parent) {
  m_grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, m_grid);
  auto* group = new QCPMarginGroup(m_plot);
  const char* names[kPanels] = {"exact", "TurboQuant", "B", "difference (TQ − exact)"};
  m_scaleA = new QCPColorScale(m_plot);
  m_scaleD = new QCPColorScale(m_plot);
  for (int k = 0; k < kPanels; ++k) {
    m_panelTitle[k] = textElement(m_plot, names[k], 9.5, true);
    m_rect[k] = new QCPAxisRect(m_plot);
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
    m_map[k] = new HeatColorMap(x, y);
    m_map[k]->setInterpolate(false);
    m_map[k]->setTightBoundary(false);
    m_map[k]->setColorScale(k == 3 ? m_scaleD : m_scaleA);
    m_map[k]->setGradient(k == 3 ? diverging() : viridis());
    connect(x, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this, k](const QCPRange&) {
      if (m_syncing) return;
      m_syncing = true;
      for (int o = 0; o < kPanels; ++o)
        if (o != k) m_rect[o]->axis(QCPAxis::atBottom)->setRange(m_rect[k]->axis(QCPAxis::atBottom)->range());
      m_syncing = false;
      onRangeChanged();
    });
    connect(y, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this, k](const QCPRange&) {
      if (m_syncing) return;
      m_syncing = true;
      for (int o = 0; o < kPanels; ++o)
        if (o != k) m_rect[o]->axis(QCPAxis::atLeft)->setRange(m_rect[k]->axis(QCPAxis::atLeft)->range());
      m_syncing = false;
      onRangeChanged();
    });
  }
  for (int i = 0; i < 2; ++i) m_scaleTitle[i] = textElement(m_plot, " ", 8);
  for (auto* s : {m_scaleA, m_scaleD}) {
    s->setType(QCPAxis::atRight);
    s->setBarWidth(12);
    s->setMarginGroup(QCP::msTop | QCP::msBottom, group);
  }
  m_scaleA->setGradient(viridis());
  m_scaleD->setGradient(diverging());
  m_scaleD->axis()->setLabel("Δ");
  arrangePanels(false);
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
    if (c0 == 0 && r0 == 0 && c1 == m_seq && r1 == m_seq && m_heat.row0 == 0 && m_heat.col0 == 0 && m_heat.row1 == m_seq && m_heat.col1 == m_seq)
      return;
    emit regionRequested(r0, r1, c0, c1);
  });
  finishLayout();
}

AttentionView::~AttentionView() {
  // the maps draw from m_heat's buffers, which go before the plot (a child) does
  for (auto* m : m_map)
    if (m) m->setValues(nullptr, false);
}

void AttentionView::arrangePanels(bool ab) {
  if (ab == m_ab) return;
  m_ab = ab;
  // take every element out of the grid, then place the panels of this arrangement
  auto takeOut = [this](QCPLayoutElement* el) {
    if (el->layout() == m_grid) m_grid->take(el);
  };
  for (int k = 0; k < kPanels; ++k) takeOut(m_rect[k]), takeOut(m_panelTitle[k]);
  for (auto* el : std::initializer_list<QCPLayoutElement*>{m_scaleA, m_scaleD, m_scaleTitle[0], m_scaleTitle[1]}) takeOut(el);
  m_grid->simplify();
  std::vector<QCPLayoutElement*> row0, row1;
  std::vector<double> stretch;
  for (int k = 0; k < kPanels; ++k) {
    const bool shown = ab || k != 2;
    m_rect[k]->setVisible(shown);
    m_panelTitle[k]->setVisible(shown);
    m_map[k]->setVisible(shown);
    if (!shown) continue;
    row0.push_back(m_panelTitle[k]);
    row1.push_back(m_rect[k]);
    stretch.push_back(1);
    if (k == (ab ? 2 : 1)) {  // the weights' scale after the last weight map
      row0.push_back(m_scaleTitle[0]);
      row1.push_back(m_scaleA);
      stretch.push_back(0.01);
    }
  }
  row0.push_back(m_scaleTitle[1]);
  row1.push_back(m_scaleD);
  stretch.push_back(0.01);
  for (size_t c = 0; c < row1.size(); ++c) {
    m_grid->addElement(0, static_cast<int>(c), row0[c]);
    m_grid->addElement(1, static_cast<int>(c), row1[c]);
  }
  m_grid->setColumnStretchFactors(QList<double>(stretch.begin(), stretch.end()));
  // (a panel out of the layout is hidden with its axes and map: they are its children; its marks too)
  for (size_t i = 0; i < m_markLines.size(); ++i)
    if (i / 2 == 2) m_markLines[i]->setVisible(ab && m_marked >= 0);
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
    for (int k = 0; k < kPanels; ++k)
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
    l->setVisible(token >= 0 && (i / 2 != 2 || m_ab));  // panel B only in A/B
    if (i % 2 == 0) {                                   // the query row
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
  const bool ab = !h.compare.empty();
  arrangePanels(ab);
  // panel names carry core's labels, ledgers and mean attention cosines
  auto name = [&](const char* role, const std::string& label, double bytes, double cosv) {
    QString t = QString("%1%2").arg(role, QString::fromStdString(label));
    QStringList facts;
    if (bytes > 0) facts << QString("%1 B/key").arg(bytes, 0, 'f', bytes < 100 ? 1 : 0);
    if (std::isfinite(cosv)) facts << QString("mean cos %1").arg(cosv, 0, 'f', 3);
    return facts.isEmpty() ? t : t + "\n" + facts.join(" · ");  // two lines: four panels fit 1366 px
  };
  m_panelTitle[0]->setText("exact\n ");
  m_panelTitle[1]->setText(name(ab ? "A: " : "", h.labelA.empty() ? std::string("TurboQuant") : h.labelA, h.keyBytesA, h.cosineA));
  m_panelTitle[2]->setText(name("B: ", h.labelB, h.keyBytesB, h.cosineB));
  m_panelTitle[3]->setText(ab ? "A − B\n " : "difference\n(TQ − exact)");
  const double cs = h.colStride, rs = h.rowStride;
  double lo = 1e300, hi = -1e300, dmax = 0;
  for (int k = 0; k < kPanels; ++k) {
    if (k == 2 && !ab) continue;
    auto* md = m_map[k]->data();
    const bool resized = md->keySize() != h.cols || md->valueSize() != h.rows;
    md->setSize(h.cols, h.rows);
    md->setRange(QCPRange(h.col0 + (cs - 1) / 2, h.col0 + (h.cols - 1) * cs + (cs - 1) / 2),
                 QCPRange(h.row0 + (rs - 1) / 2, h.row0 + (h.rows - 1) * rs + (rs - 1) / 2));
    // the map draws from m_heat's buffer (kept until the next setData)
    const auto& src = k == 0 ? m_heat.exact : k == 1 ? m_heat.approx : k == 2 ? m_heat.compare : ab ? m_heat.diffAB : m_heat.diff;
    m_map[k]->setValues(&src, resized);
    float flo = std::numeric_limits<float>::infinity(), fhi = -flo, fabsMax = 0;
    for (const float v : src) {  // NaN compares false: skipped
      if (k < 3) {
        flo = v < flo ? v : flo;
        fhi = v > fhi ? v : fhi;
      } else {
        fabsMax = std::fabs(v) > fabsMax ? std::fabs(v) : fabsMax;
      }
    }
    if (k < 3 && flo <= fhi) lo = std::min(lo, static_cast<double>(flo)), hi = std::max(hi, static_cast<double>(fhi));
    if (k == 3) dmax = std::max(dmax, static_cast<double>(fabsMax));
  }
  if (hi < lo) lo = 0, hi = 1;
  auto* scaleA = m_map[0]->colorScale();
  if (h.softmax) {
    lo = std::max(lo, hi * 1e-4);
    for (int k = 0; k < 3; ++k) {
      m_map[k]->setDataScaleType(QCPAxis::stLogarithmic);
      m_map[k]->setDataRange(QCPRange(lo, hi));
    }
    scaleA->setDataScaleType(QCPAxis::stLogarithmic);
    scaleA->axis()->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    scaleA->axis()->setNumberFormat("eb");
    scaleA->axis()->setNumberPrecision(0);
    scaleA->axis()->setLabel("softmax weight (log)");
  } else {
    for (int k = 0; k < 3; ++k) {
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
  m_map[3]->setDataRange(QCPRange(-dmax, dmax));
  m_map[3]->colorScale()->setDataRange(QCPRange(-dmax, dmax));
  const QString lod = h.colStride > 1 || h.rowStride > 1 ? QString(" · level of detail: 1 query per %1 rows, keys %2-pooled per %3")
                                                               .arg(h.rowStride)
                                                               .arg(h.softmax ? "max" : "mean")
                                                               .arg(h.colStride)
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
    for (int k = 0; k < kPanels; ++k) {
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

void AttentionView::resetZoom() {
  zoomTo(-0.5, m_seq - 0.5, -0.5, m_seq - 0.5);
}

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
  if (!h.compare.empty())
    return s + QString("   exact %1   A %2   B %3   A−B %4")
                   .arg(e, 0, 'g', 4)
                   .arg(a, 0, 'g', 4)
                   .arg(h.at(h.compare, i, j), 0, 'g', 4)
                   .arg(h.at(h.diffAB, i, j), 0, 'g', 3);
  return s + QString("   exact %1   TurboQuant %2   Δ %3").arg(e, 0, 'g', 4).arg(a, 0, 'g', 4).arg(d, 0, 'g', 3);
}

void AttentionView::onMouseMove(QMouseEvent* ev) {
  auto* r = m_plot->axisRectAt(ev->pos());
  int k = -1;
  for (int o = 0; o < kPanels; ++o)
    if (r == m_rect[o] && m_rect[o]->visible()) k = o;
  if (k < 0) return;
  const QString s =
      describe(m_rect[k]->axis(QCPAxis::atBottom)->pixelToCoord(ev->pos().x()), m_rect[k]->axis(QCPAxis::atLeft)->pixelToCoord(ev->pos().y()));
  if (s.isEmpty() || s == m_hoverEl->text()) return;
  m_hoverEl->setText(s);
  emit hoverText(s);
  requestReplot();
}

QString AttentionView::csv() const {
  const Heatmap& h = m_heat;
  const bool ab = !h.compare.empty();
  QString out = ab ? "row_bin,query_token,query_text,key_begin,key_end,exact,a,b,a_minus_b,a_minus_exact\n"
                   : "row_bin,query_token,query_text,key_begin,key_end,exact,turboquant,difference\n";
  out.reserve(static_cast<int>(h.rows) * h.cols * 40);
  for (int i = 0; i < h.rows; ++i) {
    const int qt = h.rowToken[static_cast<size_t>(i)];
    const QString qtext = m_data ? csvEscape(m_data->tokenText(qt)) : QString();
    for (int j = 0; j < h.cols; ++j) {
      const float e = h.at(h.exact, i, j);
      if (std::isnan(e)) continue;
      const int k0 = h.col0 + j * h.colStride;
      out += QString("%1,%2,%3,%4,%5,%6,%7,")
                 .arg(i)
                 .arg(qt)
                 .arg(qtext)
                 .arg(k0)
                 .arg(std::min(h.col1, k0 + h.colStride))
                 .arg(e, 0, 'g', 7)
                 .arg(h.at(h.approx, i, j), 0, 'g', 7);
      if (ab) out += QString("%1,%2,").arg(h.at(h.compare, i, j), 0, 'g', 7).arg(h.at(h.diffAB, i, j), 0, 'g', 7);
      out += QString("%1\n").arg(h.at(h.diff, i, j), 0, 'g', 7);
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
