// SPDX-License-Identifier: GPL-3.0-or-later
#include "compute.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "attention/attention.h"
#include "backend_select.h"
#include "codebook/codebook.h"
#include "data/queries.h"
#include "metrics/metrics.h"
#include "quant/quantizer.h"
#include "util/parallel.h"
#include "util/rng.h"

namespace tq::ui {

std::string DataContext::tokenText(int t) const {
  if (t >= 0 && static_cast<size_t>(t) < tokens.size()) return tokens[static_cast<size_t>(t)];
  return "#" + std::to_string(t);
}

std::shared_ptr<const DataContext> makeContext(std::shared_ptr<const tq::KvSource> src) {
  auto c = std::make_shared<DataContext>();
  c->shape = src->shape();
  c->name = src->name();
  c->model = src->modelName();
  if (c->model.empty()) c->model = c->name;
  c->tokens = src->tokenStrings();
  c->scale = src->softmaxScale();
  c->source = std::move(src);
  // the exact-law codebooks of this head size (keys and values, 1..8 bits) on all cores now: the first
  // detail and the first sweep cell would otherwise each wait for them one by one
  const int dv = c->shape.headDimV > 0 ? c->shape.headDimV : c->shape.headDim;
  if (c->shape.headDim >= 2 && c->shape.headDim <= 4096 && dv >= 2 && dv <= 4096)
    tq::parallelRanges(16, 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) tq::codebook(i < 8 ? c->shape.headDim : dv, static_cast<int>(i % 8) + 1, tq::CodebookLaw::Exact);
    });
  return c;
}

namespace {

/// One backend per (worker thread, choice): a CUDA context is costly to create.
thread_local std::map<int, std::pair<std::unique_ptr<tq::Backend>, std::string>> t_backends;

tq::Backend& threadBackend(tq::BackendChoice choice, std::string* note) {
  auto& slot = t_backends[static_cast<int>(choice)];
  if (!slot.first) slot.first = tq::chooseBackend(choice, &slot.second);  // the one factory (core/backends)
  if (note) *note = slot.second;
  return *slot.first;
}

}  // namespace

void releaseThreadBackends() { t_backends.clear(); }

int resolveQueryPos(const Experiment& e, int seq) { return e.queryPos < 0 || e.queryPos >= seq ? seq - 1 : e.queryPos; }

tq::DetailConfig detailConfigFor(const Experiment& e, int headDim) {
  tq::DetailConfig c;
  c.layer = e.layer;
  c.qHead = e.qHead;
  c.keyMode = e.keyMode;
  c.keyBits = e.keyBits;
  c.valueBits = e.valueBits;
  c.projDim = e.projDimFor(headDim);
  c.rotation = e.rotation;
  c.law = e.law;
  c.seed = e.seed;
  c.queries = e.querySource;
  c.queryPos = e.queryPos;
  c.softmaxWeights = e.softmaxWeights;
  c.sweepQueries = e.sweepQueries;
  c.centering = e.centering;
  c.centerWindow = e.centerWindow;
  c.orthogonalQjl = e.orthogonalQjl;
  c.methodOptions = e.methodOptions;
  c.recentWindow = e.recentWindow;
  c.protectLayers = e.protectLayers;  // core applies them (this layer's widths)
  c.protectBits = e.protectBits;
  if (e.comparing()) {
    c.compare = true;
    c.compareKey = e.compareVariant(headDim);
  }
  return c;
}

std::shared_ptr<DetailResult> computeDetail(const DataContext& dc, const DetailRequest& req, const tq::ProgressFn& progress,
                                            const std::function<void(std::shared_ptr<const DetailResult>)>& partial) {
  std::string note;
  tq::Backend& be = threadBackend(req.exp.backend, &note);
  auto wrap = [&](const tq::DetailData& d) {
    auto r = std::make_shared<DetailResult>();
    static_cast<tq::DetailData&>(*r) = d;
    r->exp = req.exp;
    r->backendNote = note;
    return r;
  };
  std::function<void(const tq::DetailData&)> part;
  if (partial) part = [&](const tq::DetailData& d) { partial(wrap(d)); };
  return wrap(tq::computeDetailData(dc.source, dc.tokens, detailConfigFor(req.exp, dc.shape.headDim), req.parts, req.region, be, progress, part));
}

std::shared_ptr<LessonResult> computeLessonResult(const DataContext& dc, const Experiment& e, const tq::ProgressFn& progress) {
  auto out = std::make_shared<LessonResult>();
  out->exp = e;
  tq::Backend& be = threadBackend(e.backend, &out->backendNote);
  out->lesson = tq::computeLesson(dc.source, dc.tokens, dc.model, detailConfigFor(e, dc.shape.headDim), be, progress);
  return out;
}

tq::SweepConfig sweepConfigFor(const Experiment& e, const tq::KvShape& shape) {
  tq::SweepConfig c;
  c.keyBits = {1, 2, 3, 4, 5, 6, 7, 8};
  c.valueBits = {e.valueBits};
  c.modes = {tq::KeyMode::Mse, tq::KeyMode::Prod, tq::KeyMode::QjlOnly};
  const int d = shape.headDim;
  c.projDims.clear();
  for (int m : {std::max(1, d / 2), d, 2 * d, e.projDimFor(d)})
    if (std::find(c.projDims.begin(), c.projDims.end(), m) == c.projDims.end()) c.projDims.push_back(m);
  c.rotation = e.rotation;
  c.law = e.law;
  c.seed = e.seed;
  c.queries = e.querySource;
  c.maxQueries = e.sweepQueries;
  c.sampleCells = static_cast<size_t>(std::max(0, e.sweepCells));
  // the current series (mode, m) first on every cell, the other series after
  for (int b : c.keyBits) c.firstVariants.push_back({e.keyMode, b, e.keyMode == tq::KeyMode::Mse ? 0 : e.projDimFor(d)});
  c.evaluateValues = shape.hasValues;
  c.centering = e.centering;
  c.centerWindow = e.centerWindow;
  c.methods = e.methods;
  c.methodOptions = e.methodOptions;
  c.protectLayers = e.protectLayers;
  c.protectBits = e.protectBits;
  c.recentWindow = e.recentWindow;
  c.orthogonalQjl = e.orthogonalQjl;
  return c;
}

std::shared_ptr<SweepOutput> computeSweep(const DataContext& dc, const Experiment& e, const tq::ProgressFn& progress, bool background,
                                          const std::function<void(std::shared_ptr<const SweepOutput>)>& partial) {
#ifdef __linux__
  // The long sweep yields to interactive work: its threads (and those it spawns, which inherit the
  // nice value) run at low priority, so a detail job after a click is not starved by the sweep.
  int oldNice = 0;
  if (background) {
    oldNice = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 15);
  }
  struct Restore {
    bool on;
    int nice;
    ~Restore() {
      if (on) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice);
    }
  } restore{background, oldNice};
#else
  (void)background;
#endif
  auto out = std::make_shared<SweepOutput>();
  out->exp = e;
  tq::Backend& be = threadBackend(e.backend, &out->backendNote);
  tq::PartialSink sink;
  if (partial)
    sink.fn = [&](const tq::SweepResult& r) {
      auto p = std::make_shared<SweepOutput>();
      p->exp = e;
      p->backendNote = out->backendNote;
      p->result = r;
      p->curves = tq::fidelityCurves(r);
      partial(p);
    };
  out->result = tq::runSweep(*dc.source, sweepConfigFor(e, dc.shape), be, progress, sink);
  out->curves = tq::fidelityCurves(out->result);
  return out;
}

}  // namespace tq::ui
