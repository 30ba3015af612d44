// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Exporting a view: figure (PNG / SVG / PDF) and CSV, no dialogs.
#include <QSize>
#include <QString>

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
/// Writes view->csv() to path.
bool saveCsv(PlotView* view, const QString& path, QString* error);

}  // namespace tq::ui
