// SPDX-License-Identifier: GPL-3.0-or-later
// Helpers shared by the views (declared in plot_common.h).
#include "plot_common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tq::ui {

// Okabe-Ito colour-blind-safe palette.
const QColor kBlack(0, 0, 0), kOrange(230, 159, 0), kSky(86, 180, 233), kGreen(0, 158, 115), kBlue(0, 114, 178), kVermillion(213, 94, 0),
    kPink(204, 121, 167), kGrey(110, 110, 110);

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
  const QColor stops[] = {QColor(68, 1, 84),    QColor(72, 40, 120),  QColor(62, 74, 137),  QColor(49, 104, 142), QColor(38, 130, 142),
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

namespace {
/// log2(x) for finite x > 0: exponent plus a 4096-entry table of the mantissa's top bits (error < 4e-4,
/// a hundredth of a colour level at 350 levels over 1e4).
float fastLog2(float x) {
  static const std::vector<float> table = [] {
    std::vector<float> t(4096);
    for (int i = 0; i < 4096; ++i) t[static_cast<size_t>(i)] = static_cast<float>(std::log2(1.0 + (i + 0.5) / 4096.0));
    return t;
  }();
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const int e = static_cast<int>((u >> 23) & 0xff);
  if (e == 0) return std::log2(x);  // subnormal: rare
  return static_cast<float>(e - 127) + table[(u >> 11) & 0xfff];
}
}  // namespace

void HeatColorMap::setValues(const std::vector<float>* values, bool sizeChanged) {
  m_values = values;
  if (sizeChanged) m_qcpFlagPending = true;
  mMapImageInvalidated = true;
}

void HeatColorMap::updateMapImage() {
  // QCP redraws while its data object says "modified" (set by setSize, cleared only by its own
  // updateMapImage): let it run once after a resize, then draw ours over its result.
  if (m_qcpFlagPending) {
    // on a linear data scale: its colourisation of the (unused) cells then costs no logarithm per cell
    // (~5 ms a 512 x 512 map on the 2-core machine, three maps in the first replot after a resize)
    const QCPAxis::ScaleType scale = mDataScaleType;
    mDataScaleType = QCPAxis::stLinear;
    QCPColorMap::updateMapImage();
    mDataScaleType = scale;
    m_qcpFlagPending = false;
  }
  const int cols = mMapData->keySize(), rows = mMapData->valueSize();
  if (!m_values || cols <= 0 || rows <= 0 || m_values->size() != static_cast<size_t>(rows) * static_cast<size_t>(cols)) {
    mMapImageInvalidated = false;
    return;
  }
  if (m_lut.empty() || !(m_lutGradient == mGradient)) {
    m_lutGradient = mGradient;
    const int L = std::max(2, mGradient.levelCount());
    m_lut.resize(static_cast<size_t>(L));
    for (int k = 0; k < L; ++k) m_lut[static_cast<size_t>(k)] = mGradient.color((k + 0.5) / (L - 1), QCPRange(0, 1), false);
  }
  const int L = static_cast<int>(m_lut.size());
  const QRgb nanRgb = mGradient.nanColor().rgba();
  const bool logScale = mDataScaleType == QCPAxis::stLogarithmic && mDataRange.lower > 0 && mDataRange.upper > mDataRange.lower;
  const double lo = mDataRange.lower, span = mDataRange.upper - mDataRange.lower;
  const float llo = logScale ? static_cast<float>(std::log2(lo)) : 0.f;
  const float lfac = logScale ? static_cast<float>((L - 1) / std::log2(mDataRange.upper / lo)) : 0.f;
  const double fac = span > 0 ? (L - 1) / span : 0.0;
  QImage img(cols, rows, QImage::Format_ARGB32_Premultiplied);
  const float* v = m_values->data();
  for (int i = 0; i < rows; ++i) {
    // QImage counts scanlines from the top, value indices count from the bottom
    QRgb* px = reinterpret_cast<QRgb*>(img.scanLine(rows - 1 - i));
    const float* row = v + static_cast<size_t>(i) * static_cast<size_t>(cols);
    for (int j = 0; j < cols; ++j) {
      const float x = row[j];
      if (std::isnan(x)) {
        px[j] = nanRgb;
        continue;
      }
      int idx;
      if (logScale)
        idx = x > 0 ? static_cast<int>((fastLog2(x) - llo) * lfac) : 0;
      else
        idx = static_cast<int>((x - lo) * fac);
      px[j] = m_lut[static_cast<size_t>(std::clamp(idx, 0, L - 1))];
    }
  }
  // like QCP without interpolation: at least ~100 image pixels per axis, so cells stay sharp when scaled
  const int kf = mInterpolate ? 1 : static_cast<int>(1.0 + 100.0 / cols), vf = mInterpolate ? 1 : static_cast<int>(1.0 + 100.0 / rows);
  mMapImage = kf > 1 || vf > 1 ? img.scaled(cols * kf, rows * vf, Qt::IgnoreAspectRatio, Qt::FastTransformation) : img;
  mMapImageInvalidated = false;
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

QCPGraph* addGraph(QCustomPlot* p, QCPAxisRect* r, const QVector<double>& x, const QVector<double>& y, const QPen& pen, QCPScatterStyle ss,
                   QCPGraph::LineStyle ls) {
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

QVector<double> vec(const std::vector<double>& v) {
  return QVector<double>(v.begin(), v.end());
}
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
