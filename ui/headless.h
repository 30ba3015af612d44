// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Entry points that need QtGui but no user: the tqstudio main (GUI, --screenshot, --bench-interaction,
/// headless export when there is no display) and the `tqstudio-cli export-figures` subcommand.
#include <QString>
#include <QStringList>
#include <iosfwd>
#include <string>
#include <vector>

namespace tq::ui {

class Experiment;
/// The experiment tqstudio starts with: the one restored from the last session, with the command line's
/// data and configuration flags applied on top (a flag not given keeps its restored value).
bool startupExperiment(const Experiment& restored, const QStringList& args, Experiment* out, QString* error);

/// The whole tqstudio program (app/gui_main.cpp only calls this).
int runGui(int argc, char** argv);

/// `tqstudio-cli export-figures FILE --out DIR [--format png,svg,pdf] [--width W --height H --dpi D]
/// [--no-csv] [configuration flags]`; args start after "export-figures". FILE may be "sample" (the embedded
/// sample) or "synthetic". Creates an offscreen QApplication when none exists. Returns 0 on success,
/// 1 when a figure could not be written, 2 on bad usage or unreadable input.
int runExportFigures(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// Usage text of export-figures.
std::string exportFiguresUsage();

/// `tqstudio-cli export-lesson FILE|sample --out DIR [--format pdf,png,svg] [--size WxH] [--dpi N] [--force]
/// [configuration flags]`: the lesson as a hand-out (lesson.pdf, one page per step; PNG / SVG per step).
/// Returns 0 on success, 1 when a file could not be written (or exists without --force), 2 on bad usage or input.
int runExportLesson(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
std::string exportLessonUsage();

}  // namespace tq::ui
