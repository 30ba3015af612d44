// SPDX-License-Identifier: GPL-3.0-or-later
#include "synth/synthetic.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "util/rng.h"

namespace tq {

const char* syntheticKindName(SyntheticKind k) {
  switch (k) {
    case SyntheticKind::Gaussian: return "gaussian";
    case SyntheticKind::Sphere: return "sphere";
    case SyntheticKind::OutlierChannels: return "outliers";
    case SyntheticKind::LowRank: return "lowrank";
    default: return "rope";
  }
}

SyntheticKind parseSyntheticKind(const std::string& s) {
  if (s == "gaussian") return SyntheticKind::Gaussian;
  if (s == "sphere") return SyntheticKind::Sphere;
  if (s == "outliers" || s == "outlier") return SyntheticKind::OutlierChannels;
  if (s == "lowrank" || s == "low-rank") return SyntheticKind::LowRank;
  if (s == "rope" || s == "rope-like") return SyntheticKind::RopeLike;
  throw std::invalid_argument("unknown synthetic kind '" + s + "' (expected gaussian, sphere, outliers, lowrank or rope)");
}

void SyntheticSpec::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("synthetic: " + what);
  };
  need(layers >= 1 && layers <= 1024, "layers must be in 1..1024");
  need(kvHeads >= 1 && kvHeads <= 1024, "kv heads must be in 1..1024");
  need(qHeads >= kvHeads && qHeads % kvHeads == 0, "query heads must be a positive multiple of kv heads");
  need(tokens >= 1 && tokens <= (1 << 24), "tokens must be in 1..16M");
  need(headDim >= 2 && headDim <= 4096, "head_dim must be in 2..4096");
  need(outlierChannels >= 0 && outlierChannels <= headDim, "outlier channels must be in 0..head_dim");
  need(rank >= 1 && rank <= headDim, "rank must be in 1..head_dim");
  need(noise >= 0 && std::isfinite(noise), "noise must be >= 0");
  need(std::isfinite(outlierStrength) && std::isfinite(needleStrength), "strengths must be finite");
  need(needlePosition < tokens, "needle position must be below the token count");
}

std::string SyntheticSpec::describe() const {
  std::ostringstream os;
  os << "synthetic " << syntheticKindName(kind) << " · " << layers << "L " << qHeads << "q/" << kvHeads << "kv · d=" << headDim << " · "
     << tokens << " tok · seed " << seed;
  if (needle) os << " · needle";
  return os.str();
}

SyntheticKv::SyntheticKv(const SyntheticSpec& spec) : m_spec(spec) { m_spec.validate(); }

KvShape SyntheticKv::shape() const {
  KvShape s;
  s.layers = m_spec.layers;
  s.qHeads = m_spec.withQueries ? m_spec.qHeads : m_spec.kvHeads;
  s.kvHeads = m_spec.kvHeads;
  s.seq = m_spec.tokens;
  s.headDim = m_spec.headDim;
  s.headDimV = m_spec.headDim;
  s.hasQueries = m_spec.withQueries;
  s.hasValues = true;
  return s;
}

std::string SyntheticKv::name() const { return m_spec.describe(); }

int SyntheticKv::needleToken() const { return m_spec.needle ? (m_spec.needlePosition >= 0 ? m_spec.needlePosition : m_spec.tokens / 2) : -1; }

// role: 0 keys, 1 values, 2 queries. Keys and queries of one layer share structure (channels, bases).
std::vector<float> SyntheticKv::generate(int layer, int head, int role, const std::vector<int>* rows) const {
  const int d = m_spec.headDim, T = rows ? static_cast<int>(rows->size()) : m_spec.tokens;
  const uint64_t base = mix64(m_spec.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(layer) * 7919u);
  const uint64_t stream = kStreamSynthetic + static_cast<uint64_t>(role) * 4096u + static_cast<uint64_t>(head);
  const int kvHead = role == 2 ? head / (m_spec.qHeads / m_spec.kvHeads) : head;
  const uint64_t shared = kStreamSynthetic + 3 * 4096u + static_cast<uint64_t>(kvHead);  // per kv head structure
  std::vector<float> out(static_cast<size_t>(T) * static_cast<size_t>(d));
  auto n = [&](uint64_t s, uint64_t i) { return static_cast<float>(standardNormal(base, s, i)); };
  std::vector<float> tmp(static_cast<size_t>(d));
  for (int ri = 0; ri < T; ++ri) {
    const int t = rows ? (*rows)[static_cast<size_t>(ri)] : ri;  // every row depends only on its position
    if (t < 0 || t >= m_spec.tokens) throw std::out_of_range("row " + std::to_string(t) + " out of range [0, " + std::to_string(m_spec.tokens) + ")");
    float* row = out.data() + static_cast<size_t>(ri) * d;
    const uint64_t off = static_cast<uint64_t>(t) * static_cast<uint64_t>(d);
    for (int j = 0; j < d; ++j) row[j] = n(stream, off + j);
    if (role == 1) continue;  // values: plain Gaussian
    switch (m_spec.kind) {
      case SyntheticKind::Gaussian: break;
      case SyntheticKind::Sphere: {
        double s = 0;
        for (int j = 0; j < d; ++j) s += static_cast<double>(row[j]) * row[j];
        const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
        for (int j = 0; j < d; ++j) row[j] *= inv;
        break;
      }
      case SyntheticKind::OutlierChannels:
        for (int c = 0; c < m_spec.outlierChannels; ++c) {
          const int ch = static_cast<int>(randomBits(base, shared, static_cast<uint64_t>(c)) % static_cast<uint64_t>(d));
          row[ch] *= m_spec.outlierStrength;
        }
        break;
      case SyntheticKind::LowRank: {
        for (int j = 0; j < d; ++j) tmp[static_cast<size_t>(j)] = 0;
        for (int r = 0; r < m_spec.rank; ++r) {
          const float z = n(stream, (1ull << 40) + static_cast<uint64_t>(t) * 64 + static_cast<uint64_t>(r));
          for (int j = 0; j < d; ++j) tmp[static_cast<size_t>(j)] += z * n(shared, static_cast<uint64_t>(r) * d + j);
        }
        const float sc = 1.0f / std::sqrt(static_cast<float>(m_spec.rank));
        for (int j = 0; j < d; ++j) row[j] = tmp[static_cast<size_t>(j)] * sc + m_spec.noise * row[j];
        break;
      }
      case SyntheticKind::RopeLike: {
        // base vector per kv head, rotated pairwise by angle t * theta_i, plus noise
        for (int i = 0; i + 1 < d; i += 2) {
          const double theta = std::pow(10000.0, -static_cast<double>(i) / d) * t;
          const float a = 2.0f * n(shared, static_cast<uint64_t>(i)), b = 2.0f * n(shared, static_cast<uint64_t>(i + 1));
          const float c = static_cast<float>(std::cos(theta)), s = static_cast<float>(std::sin(theta));
          row[i] = a * c - b * s + m_spec.noise * row[i];
          row[i + 1] = a * s + b * c + m_spec.noise * row[i + 1];
        }
        break;
      }
    }
    if (m_spec.needle) {
      // needle direction per kv head: queries carry it weakly, the needle key strongly
      const float w = role == 2 ? 1.0f : (t == needleToken() ? m_spec.needleStrength * std::sqrt(static_cast<float>(d)) : 0.0f);
      if (w != 0.0f) {
        double s = 0;
        for (int j = 0; j < d; ++j) {
          tmp[static_cast<size_t>(j)] = n(shared, (1ull << 41) + static_cast<uint64_t>(j));
          s += static_cast<double>(tmp[static_cast<size_t>(j)]) * tmp[static_cast<size_t>(j)];
        }
        const float inv = static_cast<float>(1.0 / std::sqrt(s));
        for (int j = 0; j < d; ++j) row[j] += w * tmp[static_cast<size_t>(j)] * inv * (role == 2 ? m_spec.needleStrength : 1.0f);
      }
    }
  }
  return out;
}

std::vector<float> SyntheticKv::keys(int layer, int kvHead) const { return generate(layer, kvHead, 0); }
std::vector<float> SyntheticKv::values(int layer, int kvHead) const { return generate(layer, kvHead, 1); }
std::vector<float> SyntheticKv::queries(int layer, int qHead) const {
  if (!m_spec.withQueries) return {};
  return generate(layer, qHead, 2);
}
std::vector<float> SyntheticKv::queryRows(int layer, int qHead, const std::vector<int>& rows) const {
  if (!m_spec.withQueries) return {};
  return generate(layer, qHead, 2, &rows);
}

}  // namespace tq
