// SPDX-License-Identifier: GPL-3.0-or-later
// Figure and CSV export of a view (PNG / SVG / PDF), no dialogs.
#include "figure_export.h"

#include <QFile>

#include "util/memory_budget.h"
#include <QFileInfo>
#include <QPdfWriter>
#include <QSvgGenerator>
#include <cmath>

#include "plot_common.h"

namespace tq::ui {

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

namespace {
QSize logicalSize(QSize size, int dpi) {
  const double s = dpi / 96.0;  // layout at 96 dpi, scaled so text keeps its physical size
  return QSize(static_cast<int>(std::ceil(size.width() / s)), static_cast<int>(std::ceil(size.height() / s)));
}
}  // namespace

bool writePng(const QString& path, QSize size, int dpi, const std::function<void(QCPPainter&, QSize)>& paint, QString* error) {
  QImage img(size, QImage::Format_ARGB32);
  if (img.isNull()) {
    if (error) *error = QString("cannot allocate a %1x%2 image").arg(size.width()).arg(size.height());
    return false;
  }
  img.fill(Qt::white);
  {
    QCPPainter painter(&img);
    painter.setRenderHint(QPainter::Antialiasing);
    painter.scale(dpi / 96.0, dpi / 96.0);
    paint(painter, logicalSize(size, dpi));
  }
  const int dpm = static_cast<int>(std::lround(dpi / 0.0254));
  img.setDotsPerMeterX(dpm);
  img.setDotsPerMeterY(dpm);
  if (!img.save(path, "PNG")) {
    if (error) *error = "cannot write " + path;
    return false;
  }
  return true;
}

bool writeSvg(const QString& path, QSize size, int dpi, const QString& title, const QString& description,
              const std::function<void(QCPPainter&, QSize)>& paint, QString* error) {
  QSvgGenerator gen;
  gen.setFileName(path);
  gen.setSize(size);
  gen.setViewBox(QRect(QPoint(0, 0), size));
  gen.setResolution(96);
  gen.setTitle(title);
  gen.setDescription(description);
  QCPPainter painter;
  if (!painter.begin(&gen)) {
    if (error) *error = "cannot write " + path;
    return false;
  }
  painter.scale(dpi / 96.0, dpi / 96.0);
  paint(painter, logicalSize(size, dpi));
  painter.end();
  return true;
}

bool saveFigure(PlotView* view, const QString& path, FigureFormat format, QSize size, int dpi, QString* error) {
  auto fail = [&](const QString& m) {
    if (error) *error = m;
    return false;
  };
  if (!view) return fail("no view");
  if (view->outdated()) return fail(QString("the %1 view is out of date (%2): it is not exported").arg(view->id(), view->outdatedReason()));
  view->clearTransient();
  if (size.width() < 16 || size.height() < 16 || size.width() > 16384 || size.height() > 16384)
    return fail(QString("figure size %1x%2 is outside 16..16384 pixels per side").arg(size.width()).arg(size.height()));
  if (dpi < 24 || dpi > 1200) return fail(QString("DPI %1 is outside 24..1200").arg(dpi));
  try {
    tq::checkMemory(4.0 * size.width() * size.height(), QString("a %1x%2 figure").arg(size.width()).arg(size.height()).toStdString());
  } catch (const tq::BudgetError& e) {
    return fail(QString::fromStdString(e.what()));
  }
  QCustomPlot* p = view->plot();
  auto draw = [p](QCPPainter& painter, QSize logical) { p->toPainter(&painter, logical.width(), logical.height()); };
  if (format == FigureFormat::Png) {
    if (!writePng(path, size, dpi, draw, error)) return false;
  } else if (format == FigureFormat::Svg) {
    if (!writeSvg(path, size, dpi, view->title(), view->caption(), draw, error)) return false;
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
