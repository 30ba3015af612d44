// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Evaluation tables as CSV and JSON: one row per (key variant, value bits, layer, query head) of a
/// SweepResult, and the per-variant summary. Numbers are written with 9 significant digits; NaN/Inf are
/// written as "nan"/"inf" in CSV and null in JSON.
#include <ostream>
#include <string>

#include "sweep/sweep.h"

namespace tq {

/// Header line + one line per SweepRow (RFC 4180 quoting, '\n' line ends).
/// "none", "causal:128", "oracle": the key centering of a sweep, as the CSV/JSON and the CLI print it.
std::string centeringLabel(const SweepConfig& c);
void writeCsv(const SweepResult& result, std::ostream& os);
/// Header line + one line per SweepSummary (mean and worst metrics).
void writeSummaryCsv(const SweepResult& result, std::ostream& os);
/// {"source", "model", "backend", "device", "queries", "head_dim", "tokens", "seconds", "cancelled",
///  "config": {...}, "rows": [...], "summary": [...]}
void writeJson(const SweepResult& result, std::ostream& os);

/// File variants; throw DataError naming the path on I/O errors.
void writeCsv(const SweepResult& result, const std::string& path);
void writeSummaryCsv(const SweepResult& result, const std::string& path);
void writeJson(const SweepResult& result, const std::string& path);

}  // namespace tq
