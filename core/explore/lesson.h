// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The guided lesson: eight steps that walk through TurboQuant on the loaded data's selected head, each a
/// figure computed on that head and two to four sentences whose numbers (and whose verdicts: which
/// quantizer wins, whether the keys have outliers, whether the rotation makes them look like the sphere)
/// come from the same computation. Qt-free: the GUI's Lesson view and `tqstudio-cli export-lesson` render
/// these records and compute nothing themselves.
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "data/kv_source.h"
#include "explore/detail.h"

namespace tq {

/// Colours of the lesson's series (the renderer maps them to its palette).
enum class LessonColor { Ink, Mse, Prod, Qjl, Accent, Grey, Kivi, IntRot, Fp8 };

struct LessonSeries {
  enum Kind { Line, Dashed, Bars, Points, Steps, VLine };
  std::string name;  ///< legend text (empty: not in the legend)
  Kind kind = Line;
  LessonColor color = LessonColor::Ink;
  std::vector<double> x, y;  ///< VLine: x only
};

struct LessonPanel {
  std::string title, xLabel, yLabel;
  bool logY = false;
  std::vector<std::string> xTicks;  ///< categorical x axis (bars at 1, 2, ...) when not empty
  std::vector<LessonSeries> series;
};

struct LessonStep {
  std::string id;     ///< "kv-cache", "outliers", "rotation", "codebook", "inner-products", "softmax", "keys-values", "choose"
  std::string title;
  std::vector<std::string> sentences;  ///< two to four, numbers from the data
  std::vector<LessonPanel> panels;     ///< one or two
};

struct Lesson {
  std::string model;
  int layer = 0, qHead = 0, kvHead = 0, headDim = 0, tokens = 0, bits = 3;
  std::string backend, device;
  std::vector<LessonStep> steps;
};

/// The lesson's step ids, in order.
const std::vector<std::string>& lessonStepIds();

/// Computes every step for the selection of `cfg` (layer, query head, key bits, seed, query source,
/// rotation, law, centering). Bounded at any size: one (layer, kv head) cell, the detail views' samples.
/// Throws std::invalid_argument on bad input, std::runtime_error("cancelled") when progress returns false.
Lesson computeLesson(const std::shared_ptr<const KvSource>& src, const std::vector<std::string>& tokens, const std::string& model,
                     const DetailConfig& cfg, Backend& be, const ProgressFn& progress = {});

}  // namespace tq
