// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// On a fatal signal (SIGSEGV, SIGFPE, SIGBUS, SIGILL, SIGABRT), prints the faulting thread's name and
/// call stack to stderr (module + offset per frame: resolve with addr2line -e BINARY) and dies with the
/// same signal. The handler runs on an alternate stack, so a stack overflow is reported too (on the main
/// thread; other threads need one of their own: tools/altstack_preload.c gives every thread one).
#include <csignal>  // defines __GLIBC__ (via features.h) before the test below
#if defined(__GLIBC__)
#include <execinfo.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <vector>

namespace tq {

inline void crashTraceHandler(int sig) {
  char name[17] = {0};
  prctl(PR_GET_NAME, name, 0, 0, 0);
  const char* head = "tqstudio: fatal signal ";
  (void)!write(2, head, std::strlen(head));
  char num[4] = {static_cast<char>('0' + sig / 10 % 10), static_cast<char>('0' + sig % 10), ' ', 0};
  (void)!write(2, num, 3);
  (void)!write(2, "in thread ", 10);
  (void)!write(2, name, std::strlen(name));
  (void)!write(2, "\n", 1);
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, 2);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

inline void installCrashTrace() {
  void* warm[1];
  backtrace(warm, 1);  // loads libgcc's unwinder now, not inside the handler
  static std::vector<char> altStack(256 * 1024);
  stack_t ss{};
  ss.ss_sp = altStack.data();
  ss.ss_size = altStack.size();
  sigaltstack(&ss, nullptr);
  struct sigaction sa{};
  sa.sa_handler = crashTraceHandler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  for (int s : {SIGSEGV, SIGFPE, SIGBUS, SIGILL, SIGABRT}) sigaction(s, &sa, nullptr);
}

}  // namespace tq
#else
namespace tq {
inline void installCrashTrace() {}
}  // namespace tq
#endif
