// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The numbers behind the views, computed on worker threads from an immutable data snapshot and an
/// Experiment. Qt-free apart from the Experiment (which carries QStrings); no widgets.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "data/kv_source.h"
#include "experiment.h"
#include "explore/curves.h"
#include "explore/detail.h"
#include "explore/lesson.h"
#include "sweep/sweep.h"

namespace tq::ui {

/// Base of everything a worker job returns.
struct JobOutput {
  virtual ~JobOutput() = default;
};

/// An immutable snapshot of the loaded data, shared by the GUI and the workers.
struct DataContext {
  std::shared_ptr<const tq::KvSource> source;
  tq::KvShape shape;
  std::string name, model;
  std::vector<std::string> tokens;
  float scale = 1;
  std::string tokenText(int t) const;  ///< token string or "#t"
};
std::shared_ptr<const DataContext> makeContext(std::shared_ptr<const tq::KvSource> src);

// The detail views' records (core/explore/detail).
using tq::DetailPart;
using tq::Distortion;
using tq::EstimatorSeries;
using tq::HeatRegion;
using tq::Heatmap;
using tq::HowItWorks;
using tq::kDistortionKeys;
using tq::kDistortionSphere;
using tq::PartAll;
using tq::PartDistortion;
using tq::PartEstimator;
using tq::PartHeatmap;
using tq::PartHow;

struct DetailRequest {
  Experiment exp;
  int parts = PartAll;
  HeatRegion region;
};

struct DetailResult : JobOutput, tq::DetailData {
  Experiment exp;
  std::string backendNote;
};

/// Computes the requested parts for the selected layer / head / query. Throws on bad input.
/// partial: each of the heatmap, estimator and how-it-works parts as soon as it is ready (the final
/// result then carries only the remaining parts).
/// Destroys the calling thread's backends (a CUDA backend's streams, cuBLAS handles and device memory).
/// Each worker thread calls it before it ends, and the GUI thread before main returns: left to the
/// thread-local destructors, a worker's CUDA backend was torn down after main had returned, racing the
/// CUDA runtime's own exit handlers (a crash at exit in cublasDestroy, 1 run in 3 on the H200).
void releaseThreadBackends();
std::shared_ptr<DetailResult> computeDetail(const DataContext& data, const DetailRequest& req, const tq::ProgressFn& progress = {},
                                            const std::function<void(std::shared_ptr<const DetailResult>)>& partial = {});

/// The lesson (core/explore/lesson) of the selected head, for the Lesson view and the hand-out.
struct LessonResult : JobOutput {
  Experiment exp;
  tq::Lesson lesson;
  std::string backendNote;
};
std::shared_ptr<LessonResult> computeLessonResult(const DataContext& data, const Experiment& e, const tq::ProgressFn& progress = {});

/// The fidelity grid: key bits 1..8 x {MSE, MSE+QJL, QJL} x m in {d/2, d, 2d, current}; value bits = current.
tq::SweepConfig sweepConfigFor(const Experiment& e, const tq::KvShape& shape);

struct SweepOutput : JobOutput {
  Experiment exp;
  tq::SweepResult result;
  std::vector<tq::CurvePoint> curves;  ///< fidelityCurves(result), computed on the worker
  std::string backendNote;
};
/// background: run at a lower CPU priority (Linux nice) so interactive jobs preempt it.
/// partial: progressive results (every cell so far) from the sweep's worker threads.
std::shared_ptr<SweepOutput> computeSweep(const DataContext& data, const Experiment& e, const tq::ProgressFn& progress, bool background = false,
                                          const std::function<void(std::shared_ptr<const SweepOutput>)>& partial = {});

/// The detail configuration of an experiment for data of head size d.
/// (core applies protected layers, the recent window and the A/B comparison.)
tq::DetailConfig detailConfigFor(const Experiment& e, int headDim);
/// Resolves queryPos (-1 = last token) against the sequence length.
int resolveQueryPos(const Experiment& e, int seq);

}  // namespace tq::ui
