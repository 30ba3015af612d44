// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// The query sources: the one definition of which query vectors, at which positions, every view and
/// every CLI command measures with. A query at position t sees keys 0..t (causal).
#include <cstdint>
#include <string>
#include <vector>

#include "data/kv_source.h"

namespace tq {

enum class QuerySource {
  Dump,     ///< the dump's real queries
  LastKey,  ///< proxy (the reference's): the final token's key as the query, at every position (overstates fidelity)
  Random,   ///< proxy: Gaussian queries with the keys' mean norm
};
const char* querySourceName(QuerySource q);
/// "dump", "last-key", "random"; throws std::invalid_argument otherwise.
QuerySource parseQuerySource(const std::string& s);
/// "dump queries", "proxy: last key", "proxy: random queries".
std::string querySourceLabel(QuerySource q);

/// Seeds: one rotation per (layer, K/V) shared by all heads (ALGORITHM.md section 3).
uint64_t layerSeed(uint64_t seed, int layer, bool values);

/// Positions at which fidelity is measured (the sweep, the CLI, the estimator view): Dump and Random:
/// up to maxQueries positions evenly spaced in [seq/4, seq); LastKey: {seq - 1} (its query is the same
/// vector at every position, and the reference measures it against all keys).
std::vector<int> evaluationPositions(QuerySource q, int seq, int maxQueries);

/// Query vectors (row-major positions.size() x headDim) of query head qHead at the given positions.
/// Dump: the dump's query at t (throws std::invalid_argument when the source has none). LastKey: the
/// final token's key of the head's kv head. Random: a standard Gaussian drawn from (seed, layer, qHead, t),
/// scaled to the mean norm of the head's keys. `keys` are that kv head's keys (seq x headDim).
std::vector<float> queryVectors(const KvSource& src, QuerySource q, uint64_t seed, int layer, int qHead, const std::vector<float>& keys,
                                const std::vector<int>& positions);

}  // namespace tq
