// SPDX-License-Identifier: GPL-3.0-or-later
// EstimatorView: inner-product estimator bias and variance.
#include "estimator_view.h"

#include <QLocale>

#include <algorithm>
#include <cmath>

#include "plot_common.h"

namespace tq::ui {

// =============================================================== EstimatorView
EstimatorView::EstimatorView(QWidget* parent) : PlotView("estimator", "Inner-product estimator: bias and variance", parent) {
  auto* grid = new QCPLayoutGrid;
  m_plot->plotLayout()->addElement(1, 0, grid);
  m_rect[0] = addPanel(m_plot, grid, 0, 0, "estimated vs exact ⟨q, k⟩", &m_sub[0]);
  m_rect[1] = addPanel(m_plot, grid, 0, 1, "error = estimate − exact", &m_sub[1]);
  m_rect[0]->axis(QCPAxis::atBottom)->setLabel("exact ⟨q, k⟩");
  m_rect[0]->axis(QCPAxis::atBottom)->ticker()->setTickCount(4);  // five-digit ticks ran together in presentation mode
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
  const size_t total = series.empty() ? 0 : series.front().pairsTotal, stride = series.empty() ? 1 : series.front().stride;
  if (stride > 1)
    m_sub[0]->setText(QString("estimated vs exact ⟨q, k⟩\n%1 bits · %2 of %3 causal pairs (1 in %4)")
                          .arg(bits)
                          .arg(QLocale(QLocale::English).toString(static_cast<qulonglong>(pairs)))
                          .arg(QLocale(QLocale::English).toString(static_cast<qulonglong>(total)))
                          .arg(stride));
  else
    m_sub[0]->setText(QString("estimated vs exact ⟨q, k⟩\n%1 bits · %2 (query, key) pairs, causal").arg(bits).arg(pairs));
  // The sentence follows the data: the slope of each series on this draw of the rotation and S (core's
  // innerProductStats), not the textbook's expectation (unbiased over random draws is not unbiased per draw).
  QStringList slopes;
  for (const auto& s : series) {
    const double k = s.stats.slope;
    slopes << QString("%1 %2").arg(QString::fromStdString(tq::keyModeLabelText(s.mode))).arg(k, 0, 'f', 2);
  }
  // (the axis says what the error is: the line stays within the panel at 1366 x 768)
  m_sub[1]->setText("slope on this draw: " + slopes.join(" · ") + "\n(unbiased over random draws of S is not unbiased for one draw)");
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

}  // namespace tq::ui
