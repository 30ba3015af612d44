// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Key centering, one definition for the sweep, the CPU task and the GUI's detail views: subtract a
/// per-(layer, kv head) channel mean mu from the keys before quantizing and add <q, mu> back to every
/// estimated score. Softmax is invariant to that per-query constant, so the shift alone changes no
/// attention weight; what changes is that the quantizer spends its bits on what varies between tokens.
/// Causal: mu from the first W tokens, which are kept exact (an fp16 window); Oracle: mu of the whole
/// dump (not available to a real cache). mu is stored in fp16 and charged to the key ledger with the window.
#include <cstddef>
#include <string>
#include <vector>

namespace tq {

enum class KeyCentering { None, Causal, Oracle };
const char* keyCenteringName(KeyCentering c);  ///< "none", "causal", "oracle"
/// "none", "causal", "causal:W", "oracle"; throws std::invalid_argument naming the text.
KeyCentering parseKeyCentering(const std::string& s, int* window);
/// "none", "causal:128", "oracle".
std::string keyCenteringLabel(KeyCentering c, int window);

struct CentredKeys {
  std::vector<float> keys;  ///< seq x d: K - mu (empty when not centred)
  std::vector<float> mu;    ///< d, rounded to fp16 as stored (empty when not centred)
  size_t window = 0;        ///< the first `window` keys are kept exact
  bool active() const { return !mu.empty(); }
};
CentredKeys centreKeys(const float* K, size_t seq, size_t d, KeyCentering c, int window);

/// est (nq x seq): scores of the centred keys' reconstructions -> scores of the keys: + <q_i, mu> on every
/// row, and the exact <q_i, k_t> for t < window. No-op when c is not active.
void uncentreScores(const CentredKeys& c, const float* queries, size_t nq, const float* keys, size_t seq, size_t d, float* est);

/// The key ledger per (token, kv head): compressed tokens at compressedBytes, window tokens (centering's
/// first ones and `recent` last ones) at 2d bytes, mu at 2d bytes once per head, amortised over seq.
double centredKeyBytes(double compressedBytes, size_t seq, size_t d, const CentredKeys& c, size_t recent = 0);
/// est (nq x seq): the last `recent` columns replaced by the exact <q_i, k_t> (the recent fp16 window).
void exactRecentScores(size_t recent, const float* queries, size_t nq, const float* keys, size_t seq, size_t d, float* est);
/// The same ledger from the configuration alone (a cache of seq tokens; the memory model).
double centredKeyBytes(double compressedBytes, size_t seq, size_t d, KeyCentering c, int window, size_t recent = 0);

}  // namespace tq
