// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Where the explorer's data comes from: files (through a pluggable opener), the embedded real sample,
/// or the synthetic generator.
#include <QString>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/kv_source.h"
#include "experiment.h"

namespace tq::ui {

/// Opens a file as a KvSource; throws (std::exception) with the reader's message on any problem.
/// progress(done, total) reports the reader's scan; returning false cancels (the opener then throws).
using SourceOpener = std::function<std::unique_ptr<tq::KvSource>(const std::string& path, const std::function<bool(size_t, size_t)>& progress)>;

/// The default opener: the engine's KvDump (safetensors, npz, npy; every layout it knows).
SourceOpener defaultOpener();

/// The embedded samples are core's (data/samples.h): one definition for the CLI and the GUI.

/// Opens the data an experiment names. Throws std::exception with the reader's message.
std::shared_ptr<const tq::KvSource> openData(const Experiment& e, const SourceOpener& opener,
                                             const std::function<bool(size_t, size_t)>& progress = {});

/// Short description for the data panel: "5 layers · 8q/4kv heads\nd=8 · 512 tok · queries".
QString describeShape(const tq::KvSource& src);

}  // namespace tq::ui
