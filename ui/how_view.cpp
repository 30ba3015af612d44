// SPDX-License-Identifier: GPL-3.0-or-later
// HowItWorksView: one real key through TurboQuant, step by step.
#include "how_view.h"

#include <algorithm>
#include <cmath>

#include <QTimer>

#include "plot_common.h"

namespace tq::ui {

namespace {
/// 128 -> "₁₂₈": subscripts as characters (an underscore was lost under the larger fonts of presentation mode)
QString subscript(int n) {
  static const QString digits = QString::fromUtf8("₀₁₂₃₄₅₆₇₈₉");
  QString out;
  for (QChar c : QString::number(n)) out += c.isDigit() ? digits[c.digitValue()] : c;
  return out;
}
}  // namespace

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
  m_timer = new QTimer(this);
  m_timer->setInterval(400);
  connect(m_timer, &QTimer::timeout, this, &HowItWorksView::stepCoordinate);
}

void HowItWorksView::setPlaying(bool on) {
  if (on == m_timer->isActive()) return;
  if (on) {
    if (m_step < 0) stepCoordinate();
    m_timer->start();
  } else {
    m_timer->stop();
  }
  emit playingChanged(on);
}
bool HowItWorksView::playing() const { return m_timer->isActive(); }

void HowItWorksView::stepCoordinate() {
  if (m_h.dim <= 0) return;
  m_step = (m_step + 1) % m_h.dim;
  showStep();
}

void HowItWorksView::showStep() {
  for (auto* it : m_stepItems) m_plot->removeItem(it);
  m_stepItems.clear();
  const int j = m_step;
  if (j < 0 || j >= m_h.dim) return;
  auto vline = [&](QCPAxisRect* r, double x) {
    auto* l = new QCPItemStraightLine(m_plot);
    l->setClipAxisRect(r);
    l->point1->setAxes(r->axis(QCPAxis::atBottom), r->axis(QCPAxis::atLeft));
    l->point2->setAxes(r->axis(QCPAxis::atBottom), r->axis(QCPAxis::atLeft));
    l->point1->setCoords(x, 0);
    l->point2->setCoords(x, 1);
    l->setPen(QPen(QColor(220, 40, 40, 210), 1.6, Qt::DashLine));
    m_stepItems.push_back(l);
  };
  const size_t J = static_cast<size_t>(j);
  for (int p : {0, 2, 3}) vline(m_rect[p], j);
  const double y = J < m_h.rotated.size() ? m_h.rotated[J] : 0.0;
  vline(m_rect[1], y);
  if (m_h.mseBits > 0 && J < m_h.codeIndex.size()) {
    const int k = m_h.codeIndex[J];
    m_stepText = QString("coordinate %1: y = %2 falls in cell %3 of %4 → centroid %5; x′ = %6 there, residual %7")
                     .arg(j).arg(y, 0, 'g', 3).arg(k).arg(m_h.centroids.size()).arg(m_h.codeValue[J], 0, 'g', 3)
                     .arg(J < m_h.xMse.size() ? m_h.xMse[J] : 0.0f, 0, 'g', 3).arg(J < m_h.residual.size() ? m_h.residual[J] : 0.0f, 0, 'g', 3);
  } else {
    m_stepText = QString("coordinate %1: y = %2 · QJL-only: no codebook; the sketch keeps only signs of S·x").arg(j).arg(y, 0, 'g', 3);
  }
  auto* t = new QCPItemText(m_plot);
  t->setClipAxisRect(m_rect[2]);
  t->position->setType(QCPItemPosition::ptAxisRectRatio);
  t->position->setAxisRect(m_rect[2]);
  t->position->setCoords(0.02, 0.02);
  t->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);
  t->setText(m_stepText.left(m_stepText.indexOf(';') > 0 ? m_stepText.indexOf(';') : m_stepText.size()));
  t->setFont(baseFont(8.5, true));
  t->setColor(QColor(180, 20, 20));
  t->setBrush(QColor(255, 255, 255, 220));
  t->setPadding(QMargins(4, 2, 4, 2));
  m_stepItems.push_back(t);
  requestReplot();
}

void HowItWorksView::setData(const HowItWorks& h, int keyBits) {
  clearPanels(m_plot);
  m_stepItems.clear();  // (clearPanels removed them)
  m_h = h;
  if (m_step >= h.dim) m_step = h.dim > 0 ? 0 : -1;
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
  m_sub[0]->setText(QString(h.centred ? "1 · the centred key x = k − μ of token %1 '%2'\nkv head %3 · ‖x‖ = %4" : "1 · the key x of token %1 '%2'\nkv head %3 · ‖x‖ = %4").arg(h.token).arg(QString::fromStdString(h.tokenText)).arg(h.kvHead).arg(h.norm, 0, 'g', 4));
  // 2: rotated coordinates + density + cells
  {
    auto* r = m_rect[1];
    auto* hb = bars(r, vec(h.histX), vec(h.histDensity), QColor(190, 190, 190), "all keys of this head", h.histX.size() > 1 ? (h.histX[1] - h.histX[0]) : 0.05, nullptr);
    hb->setPen(Qt::NoPen);
    hb->addToLegend(m_legend[1]);
    addGraph(m_plot, r, vec(h.densityX), vec(h.densityY), pen(kBlack, 2))->setName(QString("sphere marginal f%1(t)").arg(subscript(d)));
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
    m_sub[1]->setText(QString("2 · rotated unit coordinates y = R x/‖x‖\nvs the sphere marginal f%1 and the codebook cells").arg(subscript(d)));
    r->axis(QCPAxis::atLeft)->setRange(0, ymax * 1.45);
    m_points += static_cast<int>(h.histX.size() + h.densityX.size() + h.rotated.size());
  }
  // 3: coordinates and their centroids
  {
    auto* r = m_rect[2];
    addGraph(m_plot, r, idx, vecf(h.rotated), Qt::NoPen, QCPScatterStyle(QCPScatterStyle::ssDisc, kBlue, kBlue, 7), QCPGraph::lsNone)->setName("rotated coordinates y");
    m_plot->graph(m_plot->graphCount() - 1)->addToLegend(m_legend[2]);
    if (!h.codeValue.empty()) {
      auto* g = addGraph(m_plot, r, idx, vecf(h.codeValue), pen(kVermillion, 1.2), QCPScatterStyle(QCPScatterStyle::ssSquare, kVermillion, Qt::white, 7), QCPGraph::lsNone);
      g->setName(QString("its centroid (%1 bits)").arg(h.mseBits));
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
    m_sub[2]->setText(h.mseBits > 0 ? QString("3 · codebook cells: each y → its nearest centroid\n%1 centroids = %2 bits per coordinate").arg(h.centroids.size()).arg(h.mseBits)
                                    : QString("3 · codebook cells\nQJL-only: no MSE stage, no codebook"));
  }
  // 4: reconstruction and residual
  {
    auto* r = m_rect[3];
    bars(r, idx, vecf(h.x), withAlpha(kBlue, 160), "x", 0.28, group)->addToLegend(m_legend[3]);
    if (h.mseBits > 0) {
      bars(r, idx, vecf(h.xMse), withAlpha(kOrange, 200), "x′ = the MSE reconstruction", 0.28, group)->addToLegend(m_legend[3]);
      bars(r, idx, vecf(h.residual), withAlpha(kVermillion, 200), "residual r = x − x′", 0.28, group)->addToLegend(m_legend[3]);
    } else {  // QJL-only: no MSE stage, the sketch is of x itself
      bars(r, idx, vecf(h.residual), withAlpha(kVermillion, 200), "r = x (QJL-only: no MSE stage)", 0.28, group)->addToLegend(m_legend[3]);
    }
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
    const QString other = h.compareMode == tq::KeyMode::QjlOnly ? QString("QJL-only m=%1").arg(h.projDim) : QString("MSE+QJL %1 bits").arg(keyBits);
    double ymax = std::max(hist(h.trialsMse, kBlack, QString("MSE-only %1 bits").arg(keyBits), Qt::SolidLine),
                           hist(h.trialsProd, h.compareMode == tq::KeyMode::QjlOnly ? kVermillion : kBlue, other, Qt::SolidLine));
    auto* t = addGraph(m_plot, r, {h.truth}, {ymax * 1.15}, pen(kVermillion, 2.5), QCPScatterStyle(), QCPGraph::lsImpulse);
    t->setName(QString("truth ⟨q, x⟩ = %1").arg(h.truth, 0, 'g', 4));
    t->addToLegend(m_legend[5]);
    r->axis(QCPAxis::atBottom)->setRange(start, start + span);
    r->axis(QCPAxis::atLeft)->setRange(0, ymax * 1.9);
    m_sub[5]->setText(QString("6 · estimate of ⟨q, x⟩ = %1 over %4 seeds\nthis seed: MSE-only %2 · %5 %3").arg(h.truth, 0, 'g', 4).arg(h.estimateMse, 0, 'g', 4).arg(h.estimateProd, 0, 'g', 4)
                          .arg(h.trialsMse.size()).arg(h.compareMode == tq::KeyMode::QjlOnly ? "QJL-only" : "MSE+QJL"));
  }
  m_rect[0]->axis(QCPAxis::atBottom)->setRange(-0.8, d - 0.2);
  {
    double lo = 0, hi = 0;
    for (float f : h.x) lo = std::min(lo, double(f)), hi = std::max(hi, double(f));
    fitY(m_rect[0], lo, hi + (hi - lo) * 0.3);
  }
  if (m_step >= 0) showStep();
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

}  // namespace tq::ui
