// SPDX-License-Identifier: GPL-3.0-or-later
#include "backend_select.h"
#ifdef TQ_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace tq {

bool cudaCompiledIn() {
#ifdef TQ_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Backend> chooseBackend(BackendChoice choice, std::string* message) {
  if (message) message->clear();
#ifdef TQ_HAVE_CUDA
  return selectBackend(choice, message);
#else
  if (choice != BackendChoice::Cpu && message) *message = "CUDA unavailable: this build has no CUDA backend (configured without nvcc or with TQ_ENABLE_CUDA=OFF)";
  return makeCpuBackend();
#endif
}

}  // namespace tq
