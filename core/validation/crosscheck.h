// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Cross-check against another implementation's tensors (a file laid out like the reference's
/// seed_golden.safetensors): rebuild quantizers from its rotation / codebook / QJL tensors and compare.
#include <functional>
#include <string>
#include <vector>

namespace tq {

struct CrossCheckItem {
  std::string what;        ///< e.g. "indices", "signs", "reconstruction", "inner_products"
  size_t compared = 0;     ///< number of values compared
  size_t mismatches = 0;   ///< values outside tolerance (ties excluded)
  size_t ties = 0;         ///< differences excused as ties at a boundary / zero
  double maxError = 0;     ///< largest error (absolute, or relative to the largest |value| where noted)
  double tolerance = 0;
  bool informational = false;  ///< reported, not part of pass/fail
  std::string note;
  bool pass() const { return informational || mismatches == 0; }
};

struct CrossCheckGroup {
  std::string name;  ///< e.g. "d128.b3.prod_m64"
  int dim = 0, bits = 0;
  std::vector<CrossCheckItem> items;
  bool pass() const;
};

struct CrossCheckReport {
  std::string file;
  std::vector<CrossCheckGroup> groups;
  bool pass() const;
};

/// Runs every group found in the file. Throws DataError for unreadable or malformed files.
CrossCheckReport crossCheckReference(const std::string& path);

}  // namespace tq
