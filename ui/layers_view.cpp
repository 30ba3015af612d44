// SPDX-License-Identifier: GPL-3.0-or-later
// LayersView: the layer x head map of one configuration's metric, and the per-layer mean.
#include "layers_view.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "plot_common.h"
#include "explore/curves.h"

namespace tq::ui {

LayersView::LayersView(QWidget* parent) : PlotView("layers", "Which layers break: one configuration on every layer and head", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  auto* group = new QCPMarginGroup(m_plot);
  m_mapTitle = textElement(m_plot, "layer × query head", 9.5, true);
  grid->addElement(0, 0, m_mapTitle);
  grid->addElement(0, 1, textElement(m_plot, " ", 8));
  grid->addElement(0, 2, textElement(m_plot, "mean over the layer's heads", 9.5, true));
  m_map = new QCPAxisRect(m_plot);
  m_bars = new QCPAxisRect(m_plot);
  grid->addElement(1, 0, m_map);
  m_scale = new QCPColorScale(m_plot);
  m_scale->setType(QCPAxis::atRight);
  m_scale->setBarWidth(12);
  m_scale->setGradient(viridis());
  grid->addElement(1, 1, m_scale);
  grid->addElement(1, 2, m_bars);
  grid->setColumnStretchFactor(0, 3);
  grid->setColumnStretchFactor(1, 0.01);
  grid->setColumnStretchFactor(2, 1.2);
  for (auto* r : {m_map, m_bars}) r->setMarginGroup(QCP::msTop | QCP::msBottom, group);
  m_scale->setMarginGroup(QCP::msTop | QCP::msBottom, group);
  m_map->axis(QCPAxis::atBottom)->setLabel("query head");
  m_map->axis(QCPAxis::atLeft)->setLabel("layer");
  m_map->axis(QCPAxis::atLeft)->setRangeReversed(true);
  m_bars->axis(QCPAxis::atLeft)->setRangeReversed(true);
  m_bars->axis(QCPAxis::atLeft)->setTickLabels(false);
  m_status = textElement(m_plot, "the sweep has not run yet", 9, false, kGrey);
  m_plot->plotLayout()->addElement(2, 0, m_status);
  finishLayout();
}

void LayersView::setRunning(const QString& text) {
  m_status->setText(text);
  requestReplot();
}

void LayersView::setData(std::shared_ptr<const SweepOutput> out, const Experiment& cur) {
  clearPanels(m_plot);
  const auto& res = out->result;
  const auto& metrics = tq::curveMetrics();
  size_t mi = 0;
  for (size_t i = 0; i < metrics.size(); ++i)
    if (cur.layerMetric == metrics[i].column) mi = i;
  const auto& md = metrics[mi];
  const tq::KeyVariant key = cur.layerVariant(res.headDim);
  // values: TurboQuant's rows use the experiment's value bits; a method's values are its own at that width
  int vb = res.config.evaluateValues ? cur.valueBits : 0;
  if (!tq::methodHasBits(key.method) && tq::valueFamily(key.method) == key.method) vb = res.config.evaluateValues ? tq::methodFixedBits(key.method) : 0;
  tq::LayerHeadMap map = tq::layerHeadMap(res, key, vb, mi);
  if (map.measured == 0 && vb != 0) map = tq::layerHeadMap(res, key, 0, mi);  // a method without value rows
  const int L = static_cast<int>(map.layers.size()), H = map.heads;
  const QString config = key.method == tq::Method::TurboQuant
                             ? QString("%1 K%2%3").arg(keyModeLabel(key.mode)).arg(key.bits).arg(key.mode == tq::KeyMode::Mse ? QString() : QString(" m=%1").arg(key.projDim))
                             : QString("%1 K%2").arg(QString::fromStdString(key.methodName())).arg(key.bits);
  m_mapTitle->setText(QString("%1 · %2 · layer × query head").arg(config, QString::fromUtf8(md.title)));
  m_csv = "layer,q_head,method,key_bits,value_bits," + QString(md.column) + "\n";
  m_points = 0;
  m_worstLayer = -1;
  if (L > 0 && H > 0) {
    auto* cm = new QCPColorMap(m_map->axis(QCPAxis::atBottom), m_map->axis(QCPAxis::atLeft));
    cm->setInterpolate(false);
    cm->setTightBoundary(false);
    cm->data()->setSize(H, L);
    cm->data()->setRange(QCPRange(0, H - 1), QCPRange(0, L - 1));
    double lo = 1e300, hi = -1e300;
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < H; ++h) {
        double v = map.value[static_cast<size_t>(l) * static_cast<size_t>(H) + static_cast<size_t>(h)];
        if (std::isfinite(v)) {
          if (md.logScale) v = std::log10(std::max(v, 1e-7));
          lo = std::min(lo, v), hi = std::max(hi, v);
          ++m_points;
          m_csv += QString("%1,%2,%3,%4,%5,%6\n").arg(map.layers[static_cast<size_t>(l)]).arg(h).arg(QString::fromStdString(key.methodName()))
                       .arg(key.bits).arg(vb).arg(map.value[static_cast<size_t>(l) * static_cast<size_t>(H) + static_cast<size_t>(h)], 0, 'g', 10);
        }
        cm->data()->setCell(h, l, v);
      }
    QCPColorGradient g = viridis();
    if (!md.higherIsBetter) g = g.inverted();  // yellow = good for every metric
    g.setNanHandling(QCPColorGradient::nhNanColor);
    g.setNanColor(QColor(225, 225, 225));
    cm->setGradient(g);
    cm->setColorScale(m_scale);
    m_scale->setGradient(g);
    if (lo <= hi) cm->setDataRange(QCPRange(md.logScale ? lo : std::min(lo, md.higherIsBetter ? hi - 1e-9 : lo), hi + (hi == lo ? 1e-9 : 0)));
    m_scale->axis()->setLabel(md.logScale ? QString("log₁₀ ") + md.column : QString(md.column));
    m_map->axis(QCPAxis::atBottom)->setRange(-0.5, H - 0.5);
    m_map->axis(QCPAxis::atLeft)->setRange(-0.5, L - 0.5);
    // layer ticks: the dump's layer numbers (a slice keeps its original ones)
    QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
    const int step = std::max(1, L / 14);
    for (int l = 0; l < L; l += step) t->addTick(l, QString::number(map.layers[static_cast<size_t>(l)]));
    m_map->axis(QCPAxis::atLeft)->setTicker(t);
    QSharedPointer<QCPAxisTickerText> th(new QCPAxisTickerText);
    const int hstep = std::max(1, H / 16);
    for (int h = 0; h < H; h += hstep) th->addTick(h, QString::number(h));
    m_map->axis(QCPAxis::atBottom)->setTicker(th);
    // per-layer mean, as horizontal bars on the same rows
    QVector<double> ys, means;
    double worst = 0;
    for (int l = 0; l < L; ++l) {
      const double v = map.layerMean[static_cast<size_t>(l)];
      if (!std::isfinite(v)) continue;
      ys << l;
      means << v;
      const double score = md.higherIsBetter ? -v : v;
      if (m_worstLayer < 0 || score > worst) worst = score, m_worstLayer = map.layers[static_cast<size_t>(l)];
    }
    auto* bars = new QCPBars(m_bars->axis(QCPAxis::atLeft), m_bars->axis(QCPAxis::atBottom));
    bars->setWidth(0.8);
    bars->setData(ys, means);
    bars->setPen(Qt::NoPen);
    bars->setBrush(withAlpha(kBlue, 170));
    m_bars->axis(QCPAxis::atLeft)->setRange(-0.5, L - 0.5);
    m_bars->axis(QCPAxis::atBottom)->setLabel(QString::fromUtf8(md.title));
    // (the value axis of horizontal bars is the bottom one)
    m_bars->axis(QCPAxis::atBottom)->setScaleType(md.logScale ? QCPAxis::stLogarithmic : QCPAxis::stLinear);
    if (md.logScale)
      m_bars->axis(QCPAxis::atBottom)->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    else
      m_bars->axis(QCPAxis::atBottom)->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    if (!means.isEmpty()) {
      const double mx = *std::max_element(means.begin(), means.end());
      m_bars->axis(QCPAxis::atBottom)->setRange(md.logScale ? std::max(1e-7, *std::min_element(means.begin(), means.end()) / 2) : std::min(0.0, *std::min_element(means.begin(), means.end())),
                                                md.logScale ? mx * 2 : (md.higherIsBetter ? std::max(1.0, mx) : mx * 1.1));
    }
  }
  QString status = QString("%1 of %2 (layer, head) cells measured").arg(map.measured).arg(static_cast<size_t>(L) * static_cast<size_t>(std::max(H, 0)));
  if (res.partial()) status += " · the sweep is still running (grey: not yet measured)";
  if (m_worstLayer >= 0) status += QString(" · worst layer %1").arg(m_worstLayer);
  status += QString(" · %1 · values %2 · %3").arg(QString::fromStdString(res.queryLabel)).arg(vb > 0 ? QString("%1 bits").arg(vb) : QString("not scored"))
                .arg(QString::fromStdString(res.backend));
  if (map.measured == 0 && res.cellsDone > 0)
    status = QString("%1 is not in this sweep (choose it under COMPARE ▸ Baselines)").arg(QString::fromStdString(key.methodName()));
  m_status->setText(status);
  applyStyle();
  requestReplot();
}

QString LayersView::csv() const { return m_csv; }
int LayersView::dataPoints() const { return m_points; }

}  // namespace tq::ui
