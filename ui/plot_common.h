// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Private to tq_ui's view sources (plot_view.cpp, the *_view.cpp files, figure_export.cpp): the helpers
/// they share (palette, fonts, panels, legends, graphs, axes, data conversion). Not installed, not part of
/// the public header plot_views.h. Includes qcustomplot.h (tq_ui precompiles it).
#include <qcustomplot.h>

#include <QColor>
#include <QFont>
#include <QPen>
#include <QString>
#include <QVector>
#include <string>
#include <vector>

#include "quant/quantizer.h"

namespace tq::ui {

// Okabe-Ito colour-blind-safe palette.
extern const QColor kBlack, kOrange, kSky, kGreen, kBlue, kVermillion, kPink, kGrey;

QColor modeColor(tq::KeyMode m, int variant = 0);
QColor withAlpha(QColor c, int a);
QCPColorGradient viridis();
QCPColorGradient diverging();

/// A colour map drawn from a float buffer (row-major rows x cols; row i is value index i, NaN = no data)
/// instead of QCPColorMapData's cells: no per-cell setCell calls, and the image is built with a
/// look-up table of the gradient's levels and a table-driven log2, without a libm call per cell (QCP's
/// colourisation cost 50-60 ms for three 512 x 512 maps on the H200 host, docs/EXPLORER.md). The data
/// object still carries the size and ranges (call setSize / setRange on it as usual, then setValues).
/// Horizontal key axis only.
class HeatColorMap : public QCPColorMap {
 public:
  HeatColorMap(QCPAxis* keyAxis, QCPAxis* valueAxis) : QCPColorMap(keyAxis, valueAxis) {}
  /// The values to draw; `values` must outlive the next setValues (the caller owns them).
  void setValues(const std::vector<float>* values, bool sizeChanged);

 protected:
  void updateMapImage() override;

 private:
  const std::vector<float>* m_values = nullptr;
  bool m_qcpFlagPending = true;  // QCP's own data-modified flag is set (by setSize) until its updateMapImage runs
  QCPColorGradient m_lutGradient;
  std::vector<QRgb> m_lut;
};
QFont baseFont(double pt, bool bold = false);
QCPTextElement* textElement(QCustomPlot* p, const QString& text, double pt, bool bold = false, QColor color = Qt::black);
/// Axis rect with a small title above it, placed at (row, col) of grid.
QCPAxisRect* addPanel(QCustomPlot* p, QCPLayoutGrid* grid, int row, int col, const QString& title, QCPTextElement** titleOut);
QCPLegend* insetLegend(QCPAxisRect* r, Qt::Alignment where);
QCPGraph* addGraph(QCustomPlot* p, QCPAxisRect* r, const QVector<double>& x, const QVector<double>& y, const QPen& pen,
                   QCPScatterStyle ss = QCPScatterStyle(), QCPGraph::LineStyle ls = QCPGraph::lsLine);
QPen pen(const QColor& c, double w = 1.6, Qt::PenStyle s = Qt::SolidLine);
void setLogY(QCPAxisRect* r);
void bitsTicker(QCPAxis* x);
QVector<double> vec(const std::vector<double>& v);
QVector<double> vecf(const std::vector<float>& v);
QVector<double> iota(int n, double start = 0);
QString csvEscape(const std::string& s);
void clearPanels(QCustomPlot* p);
/// Padded y range of some data.
void fitY(QCPAxisRect* r, double lo, double hi, double padFrac = 0.06);

}  // namespace tq::ui
