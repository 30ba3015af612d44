// SPDX-License-Identifier: GPL-3.0-or-later
#include "cli.h"

#include <ostream>

namespace tq {
int runCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  (void)out;
  err << "usage: tqstudio-cli <command> (" << args.size() << " arguments given)\n";
  return 2;
}
}  // namespace tq
