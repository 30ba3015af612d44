// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Minimal fork-join over index ranges (std::thread); runs inline for small work.
#include <algorithm>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tq {

int cpuThreads();

/// True inside a parallelRanges worker: nested calls then run inline instead of oversubscribing.
inline bool& inParallelRegion() {
  thread_local bool flag = false;
  return flag;
}

/// Calls fn(begin, end) on contiguous ranges covering [0, n) from up to cpuThreads() threads.
/// Ranges hold at least minPerThread items. An exception thrown by fn on any thread is rethrown here
/// after every thread has joined (the first one, when several throw); it never terminates the program.
inline void parallelRanges(size_t n, size_t minPerThread, const std::function<void(size_t, size_t)>& fn) {
  const size_t maxThreads = static_cast<size_t>(std::max(1, cpuThreads()));
  size_t threads = std::min(maxThreads, minPerThread == 0 ? maxThreads : n / std::max<size_t>(1, minPerThread));
  if (threads <= 1 || inParallelRegion()) {
    if (n) fn(0, n);
    return;
  }
  std::exception_ptr failure;
  std::mutex failureMutex;
  auto guarded = [&](size_t b, size_t e) {
    try {
      fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failureMutex);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  const size_t per = (n + threads - 1) / threads;
  for (size_t t = 1; t < threads; ++t) {
    const size_t b = t * per, e = std::min(n, b + per);
    if (b < e)
      pool.emplace_back([&guarded, b, e] {
        inParallelRegion() = true;
        guarded(b, e);
      });
  }
  inParallelRegion() = true;
  guarded(0, std::min(n, per));
  inParallelRegion() = false;
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace tq
