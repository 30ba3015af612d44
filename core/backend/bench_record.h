// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// One benchmark measurement, printed as one JSON object by `tqstudio-cli bench --json` and bench/.
#include <cstddef>
#include <string>

namespace tq {

struct BenchRecord {
  std::string operation;   ///< compress_keys_prod, compress_values_mse, score_keys, decompress_values, baseline_*
  std::string backend;     ///< "cpu" or "cuda"
  std::string device;      ///< device name
  int dim = 0, bits = 0, projDim = 0;
  std::string rotation;    ///< haar / hadamard / "-"
  size_t vectors = 0;      ///< vectors (or keys) processed per repetition
  double seconds = 0;      ///< median seconds per repetition
  double vectorsPerSecond = 0;
  double bytesMoved = 0;   ///< bytes read + written per repetition
  double gbPerSecond = 0;
  double percentOfPeak = -1;  ///< of the device's peak memory bandwidth; -1 when unknown
  int repetitions = 0;
  std::string note;
};

}  // namespace tq
