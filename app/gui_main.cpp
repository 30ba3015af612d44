// SPDX-License-Identifier: GPL-3.0-or-later
// tqstudio: the desktop explorer (everything lives in tq_ui).
#include "crash_trace.h"
#include "headless.h"

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  tq::installCrashTrace();
  const int rc = tq::ui::runGui(argc, argv);
  if (std::getenv("TQ_TRACE_EXIT")) {  // teardown markers: where a crash at exit happens
    std::fprintf(stderr, "tqstudio: leaving main (%d)\n", rc);
    std::atexit([] { std::fprintf(stderr, "tqstudio: exit handlers ran\n"); });
  }
  return rc;
}
