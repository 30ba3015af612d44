// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// `tqstudio-cli validate`: the engine checked against the theory on synthetic unit vectors (codebook
/// properties, MSE against theory and the paper's bounds, inner-product slope, bias and variance, needle
/// retrieval, bytes held against the storage formula). One function per section; each returns its JSON
/// rows and records the checks that failed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rotation/rotation.h"

namespace tq {

struct ValidateConfig {
  int dim = 128;
  std::vector<int> bits{1, 2, 3, 4};
  size_t vectors = 100000;
  uint64_t seed = 42;
  RotationKind rotation = RotationKind::Haar;
};

/// Collects the names of failed checks: check(condition, what) returns the condition.
struct ValidateFailures {
  std::vector<std::string> list;
  bool operator()(bool cond, const std::string& what);
};

using json = nlohmann::ordered_json;
/// n unit vectors of dimension d from the portable RNG (seed, stream).
std::vector<float> unitVectors(size_t n, int d, uint64_t seed, uint64_t stream);
json validateCodebooks(const ValidateConfig& c, ValidateFailures& check);
json validateMse(const ValidateConfig& c, ValidateFailures& check);
json validateInnerProducts(const ValidateConfig& c, ValidateFailures& check);
json validateNeedle(const ValidateConfig& c, ValidateFailures& check);
json validateKvCache(const ValidateConfig& c, ValidateFailures& check);
/// Every section: {"command", "dim", "vectors", "seed", "rotation", "codebooks", "mse", "inner_products",
/// "needle", "kv_cache", "ok", "failures"}.
json validateEngine(const ValidateConfig& c, std::vector<std::string>* failures = nullptr);

}  // namespace tq
