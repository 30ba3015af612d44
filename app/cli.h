// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
#include <iosfwd>
#include <string>
#include <vector>

namespace tq {
/// Runs the tqstudio-cli command line; returns the exit code (0 ok, 1 check failed, 2 bad usage/input).
int runCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
}
