// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/io_util.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "data/safetensors.h"

namespace tq::io {

bool isValidUtf8(const char* s, size_t n, size_t* badOffset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s);
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07;
    else {
      if (badOffset) *badOffset = i;
      return false;
    }
    if (i + len > n) {
      if (badOffset) *badOffset = i;
      return false;
    }
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) {
        if (badOffset) *badOffset = i;
        return false;
      }
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      if (badOffset) *badOffset = i;
      return false;
    }
    i += len;
  }
  return true;
}

std::string printable(const std::string& s, size_t maxLen) {
  std::string out;
  const size_t n = s.size();
  size_t i = 0;
  while (i < n && out.size() < maxLen) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Keep one well-formed multi-byte character, escape anything else.
    size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (len && i + len <= n && isValidUtf8(s.data() + i, len)) {
      out.append(s, i, len);
      i += len;
      continue;
    }
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
    ++i;
  }
  if (i < n) out += "...";
  return out;
}

nlohmann::json parseJson(const char* begin, const char* end, const std::string& path, const std::string& what,
                         int maxDepth, bool rejectDuplicateKeys) {
  size_t bad = 0;
  if (!isValidUtf8(begin, static_cast<size_t>(end - begin), &bad))
    throw DataError(path, what + " is not valid UTF-8 (bad byte at offset " + std::to_string(bad) + ")");
  std::set<std::string> keys;
  using Event = nlohmann::json::parse_event_t;
  // The callback runs inside nlohmann's iterative parser; exceptions it throws propagate out of parse().
  auto cb = [&](int depth, Event ev, nlohmann::json& parsed) -> bool {
    if ((ev == Event::object_start || ev == Event::array_start) && depth >= maxDepth)
      throw DataError(path, what + " nests deeper than " + std::to_string(maxDepth) + " levels");
    if (rejectDuplicateKeys && ev == Event::key && depth == 1 && parsed.is_string()) {
      if (!keys.insert(parsed.get_ref<const std::string&>()).second)
        throw DataError(path, what + " repeats the key " + quote(parsed.get_ref<const std::string&>()));
    }
    return true;
  };
  try {
    return nlohmann::json::parse(begin, end, cb);
  } catch (const DataError&) {
    throw;
  } catch (const std::exception& e) {
    throw DataError(path, what + " is not valid JSON: " + printable(e.what(), 200));
  }
}

std::string humanBytes(uint64_t n) {
  char buf[64];
  if (n < 1024) std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  else if (n < (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(n) / 1024.0);
  else if (n < (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(n) / 1073741824.0);
  return buf;
}

}  // namespace tq::io
