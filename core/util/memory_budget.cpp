// SPDX-License-Identifier: GPL-3.0-or-later
#include "util/memory_budget.h"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace tq {

namespace {
std::atomic<uint64_t> g_budget{0};

uint64_t defaultBudget() {
  if (const char* env = std::getenv("TQ_MEMORY_BUDGET")) {
    try {
      const uint64_t v = parseByteSize(env, "TQ_MEMORY_BUDGET");
      if (v > 0) return v;
    } catch (const std::invalid_argument&) {
      // A malformed variable must not silently disable the budget: fall through to the default, and say so.
      std::fprintf(stderr, "tqstudio: ignoring TQ_MEMORY_BUDGET='%s' (expected bytes or a size like 8G)\n", env);
    }
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 2;
  return uint64_t{4} << 30;
}
}  // namespace

uint64_t memoryBudget() {
  uint64_t b = g_budget.load();
  if (b == 0) {
    b = defaultBudget();
    g_budget.store(b);
  }
  return b;
}

void setMemoryBudget(uint64_t bytes) { g_budget.store(bytes); }

uint64_t parseByteSize(const std::string& text, const std::string& what) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) throw std::invalid_argument(what + " expects a size like 8G or 512M, got '" + text + "'");
  const double v = std::strtod(text.substr(0, i).c_str(), nullptr);
  double mult = 1;
  const std::string unit = text.substr(i);
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k") mult = 1024.0;
  else if (unit == "M" || unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TiB") mult = 1024.0 * 1024 * 1024 * 1024;
  else throw std::invalid_argument(what + " has an unknown unit '" + unit + "' (use K, M, G or T)");
  const double bytes = v * mult;
  if (!(bytes >= 1) || bytes > 1.8e19) throw std::invalid_argument(what + " must be between 1 byte and 16 EiB, got '" + text + "'");
  return static_cast<uint64_t>(bytes);
}

std::string formatBytes(double n) {
  char buf[64];
  if (!std::isfinite(n)) return "an unbounded amount";
  if (n < 1024) std::snprintf(buf, sizeof buf, "%.0f bytes", n);
  else if (n < 1048576.0) std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
  else if (n < 1073741824.0) std::snprintf(buf, sizeof buf, "%.1f MiB", n / 1048576.0);
  else if (n < 1099511627776.0) std::snprintf(buf, sizeof buf, "%.1f GiB", n / 1073741824.0);
  else std::snprintf(buf, sizeof buf, "%.1f TiB", n / 1099511627776.0);
  return buf;
}

void checkMemory(double bytes, const std::string& request) {
  const uint64_t budget = memoryBudget();
  if (!(bytes <= static_cast<double>(budget)))
    throw BudgetError(request + " needs " + formatBytes(bytes) + ", more than the memory budget of " + formatBytes(static_cast<double>(budget)) +
                      " (half of this machine's memory unless set with TQ_MEMORY_BUDGET or --memory-budget)");
}

}  // namespace tq
