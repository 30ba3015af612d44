// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Runtime backend choice for the CLI and the GUI, whether or not the CUDA backend was compiled in.
#include <memory>
#include <string>

#include "backend/backend.h"

namespace tq {

/// Cpu -> CPU. Cuda -> CUDA, or CPU with *message saying why not (never silent). Auto -> CUDA when
/// compiled in and a device is present, else CPU with *message saying why. *message is empty when the
/// choice was honoured exactly.
std::unique_ptr<Backend> chooseBackend(BackendChoice choice, std::string* message);
/// True when this build contains the CUDA backend.
bool cudaCompiledIn();

}  // namespace tq
