// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// One memory budget for every request whose size comes from input (a dump's tensors, an npz member to
/// inflate, the sizes given to validate/bench, a figure's pixels): the bytes a request implies are checked
/// against it before anything is allocated, and a request over it is refused with both figures.
///
/// Default: half of the machine's physical memory. Override with the environment variable
/// TQ_MEMORY_BUDGET (bytes, or with a suffix K, M, G, T: "8G") or the CLI's --memory-budget SIZE.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace tq {

/// A request that would exceed the memory budget. what() names the request, its size and the budget.
class BudgetError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The budget in bytes now in force.
uint64_t memoryBudget();
/// Sets the budget (0 restores the default). Not thread-safe against concurrent checks; call at start-up.
void setMemoryBudget(uint64_t bytes);
/// Parses "123", "512M", "8G", "1.5T" (binary units); throws std::invalid_argument naming `what`.
uint64_t parseByteSize(const std::string& text, const std::string& what);
/// "1.5 GiB" style.
std::string formatBytes(double bytes);
/// Throws BudgetError("<request> needs X, more than the memory budget of Y (...)") when bytes > budget.
/// `bytes` may be a double so that products that overflow 64 bits are still refused.
void checkMemory(double bytes, const std::string& request);

}  // namespace tq
