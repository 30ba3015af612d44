// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The seven views of the explorer and their export (public header of tq_ui's views; it includes the parts).
/// Each view is one QCustomPlot (multi-panel through its layout) with a title and the caption line, so
/// exporting a view is exporting its plot. The headers only forward-declare QCustomPlot's classes: the
/// view sources (plot_view.cpp, *_view.cpp, figure_export.cpp) include qcustomplot.h through the private
/// plot_common.h, and tq_ui precompiles it once (each translation unit that parsed it cost ~10 s).
#include "plot_view.h"
#include "attention_view.h"
#include "fidelity_view.h"
#include "memory_view.h"
#include "distortion_view.h"
#include "estimator_view.h"
#include "how_view.h"
#include "layers_view.h"
#include "figure_export.h"
