// SPDX-License-Identifier: GPL-3.0-or-later
#include <iostream>

#include "cli.h"
#include "crash_trace.h"

int main(int argc, char** argv) {
  tq::installCrashTrace();
  std::vector<std::string> args(argv + 1, argv + argc);
  return tq::runCli(args, std::cout, std::cerr);
}
