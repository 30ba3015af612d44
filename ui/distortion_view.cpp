// SPDX-License-Identifier: GPL-3.0-or-later
// DistortionView: MSE / inner-product distortion versus bits.
#include "distortion_view.h"

#include <algorithm>
#include <cmath>

#include "plot_common.h"

namespace tq::ui {

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

}  // namespace tq::ui
