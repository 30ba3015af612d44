// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Exporting a view: figure (PNG / SVG / PDF) and CSV, no dialogs.
#include <QSize>
#include <QString>
#include <functional>

class QCPPainter;

#include "plot_view.h"

namespace tq::ui {

// ------------------------------------------------------------------ export
enum class FigureFormat { Png, Svg, Pdf };
/// "png" / "svg" / "pdf" (case-insensitive); false otherwise.
bool parseFigureFormat(const QString& s, FigureFormat* f);
QString figureSuffix(FigureFormat f);

/// Renders a view to a file: PNG of exactly size pixels (dpi stored in the file), SVG with a size x px
/// canvas, PDF with a page of size / dpi inches. No dialogs; returns false with a message on failure.
bool saveFigure(PlotView* view, const QString& path, FigureFormat format, QSize size, int dpi, QString* error);
/// The writers behind saveFigure and the lesson hand-out: `paint` draws a page of `logical` size (96-dpi
/// pixels) with a painter already scaled to the file's size (PNG: exactly size pixels, dpi stored; SVG: a
/// size x px canvas). False with a message on failure.
bool writePng(const QString& path, QSize size, int dpi, const std::function<void(QCPPainter&, QSize logical)>& paint, QString* error);
bool writeSvg(const QString& path, QSize size, int dpi, const QString& title, const QString& description,
              const std::function<void(QCPPainter&, QSize logical)>& paint, QString* error);
/// Writes view->csv() to path.
bool saveCsv(PlotView* view, const QString& path, QString* error);

}  // namespace tq::ui
