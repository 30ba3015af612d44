// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// Small helpers shared by the readers in core/data: bounded JSON parsing, UTF-8 checks, message-safe
/// strings and little-endian field access. Internal to core/data (no API promise).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace tq::io {

/// True when [s, s+n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool isValidUtf8(const char* s, size_t n, size_t* badOffset = nullptr);
inline bool isValidUtf8(const std::string& s, size_t* badOffset = nullptr) { return isValidUtf8(s.data(), s.size(), badOffset); }

/// A string safe to put into an error message: control bytes and invalid UTF-8 as \xNN, at most maxLen
/// bytes (then "..."). Valid non-ASCII UTF-8 is kept.
std::string printable(const std::string& s, size_t maxLen = 120);
/// printable() in single quotes.
inline std::string quote(const std::string& s, size_t maxLen = 120) { return "'" + printable(s, maxLen) + "'"; }

/// Parses JSON text in linear time with limits: nesting depth <= maxDepth; a NUL byte anywhere is an error
/// (other readers stop at it and ignore the rest); with rejectDuplicateKeys, a key repeated inside any one
/// object (top level or nested) is an error. Throws DataError(path, what + ": " + reason).
nlohmann::json parseJson(const char* begin, const char* end, const std::string& path, const std::string& what,
                         int maxDepth = 32, bool rejectDuplicateKeys = true);

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t rd64(const uint8_t* p) { return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32); }

/// a * b without overflow; false when it would overflow.
inline bool mulChecked(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > UINT64_MAX / a) return false;
  *out = a * b;
  return true;
}

/// Throws DataError unless `path` names a regular file (after following links): a directory, FIFO, socket
/// or device is refused by name ("is a FIFO, not a regular file"). Never blocks.
void requireRegularFile(const std::string& path);

/// Reads a whole small file (an experiment, a reference list) of at most maxBytes; refuses anything that is
/// not a regular file or is larger, naming the file, its size and the limit. `what` names the file's role.
std::string readSmallFile(const std::string& path, size_t maxBytes, const std::string& what);

/// "1.5 MB" style size for messages.
std::string humanBytes(uint64_t n);

}  // namespace tq::io
