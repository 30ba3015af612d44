// SPDX-License-Identifier: GPL-3.0-or-later
// Helpers shared by the views (declared in plot_common.h).
#include "plot_common.h"

#include <cmath>

namespace tq::ui {

// Okabe-Ito colour-blind-safe palette.
const QColor kBlack(0, 0, 0), kOrange(230, 159, 0), kSky(86, 180, 233), kGreen(0, 158, 115), kBlue(0, 114, 178),
    kVermillion(213, 94, 0), kPink(204, 121, 167), kGrey(110, 110, 110);

QColor modeColor(tq::KeyMode m, int variant) {
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

QFont baseFont(double pt, bool bold) {
  QFont f("DejaVu Sans");
  f.setPointSizeF(pt);
  f.setBold(bold);
  return f;
}

QCPTextElement* textElement(QCustomPlot* p, const QString& text, double pt, bool bold, QColor color) {
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
                   QCPScatterStyle ss, QCPGraph::LineStyle ls) {
  auto* g = p->addGraph(r->axis(QCPAxis::atBottom), r->axis(QCPAxis::atLeft));
  g->setData(x, y, true);
  g->setPen(pen);
  g->setProperty("baseWidth", pen.widthF());
  g->setScatterStyle(ss);
  g->setLineStyle(ls);
  return g;
}

QPen pen(const QColor& c, double w, Qt::PenStyle s) {
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
QVector<double> iota(int n, double start) {
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
void fitY(QCPAxisRect* r, double lo, double hi, double padFrac) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return;
  if (hi <= lo) {
    hi = lo + 1;
    lo -= 1;
  }
  const double pad = (hi - lo) * padFrac;
  r->axis(QCPAxis::atLeft)->setRange(lo - pad, hi + pad);
}

}  // namespace tq::ui
