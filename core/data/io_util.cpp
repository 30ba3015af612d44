// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/io_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

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

namespace {
// A SAX handler that builds the DOM with nlohmann's own (linear) DOM builder and checks, per event, the
// nesting depth and repeated keys in every object. nlohmann's callback parser re-walks each finished object
// (quadratic in the number of keys: 40k tensors took 60 s), so it is not used.
class CheckedDomBuilder {
 public:
  using json = nlohmann::json;
  CheckedDomBuilder(json& out, const std::string& path, const std::string& what, int maxDepth, bool rejectDuplicates)
      : m_dom(out, false), m_path(path), m_what(what), m_maxDepth(maxDepth), m_rejectDuplicates(rejectDuplicates) {}
  bool null() { return m_dom.null(); }
  bool boolean(bool v) { return m_dom.boolean(v); }
  bool number_integer(json::number_integer_t v) { return m_dom.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return m_dom.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return m_dom.number_float(v, s); }
  bool string(json::string_t& v) { return m_dom.string(v); }
  bool binary(json::binary_t& v) { return m_dom.binary(v); }
  bool start_object(std::size_t n) {
    enter();
    m_keys.emplace_back();
    m_isObject.push_back(true);
    return m_dom.start_object(n);
  }
  bool key(json::string_t& k) {
    if (m_rejectDuplicates && !m_keys.back().insert(k).second)
      throw DataError(m_path, m_what + " repeats the key " + quote(k) + (m_keys.size() > 1 ? " inside one entry" : ""));
    return m_dom.key(k);
  }
  bool end_object() {
    m_keys.pop_back();
    m_isObject.pop_back();
    return m_dom.end_object();
  }
  bool start_array(std::size_t n) {
    enter();
    m_isObject.push_back(false);
    return m_dom.start_array(n);
  }
  bool end_array() {
    m_isObject.pop_back();
    return m_dom.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& ex) {
    throw DataError(m_path, m_what + " is not valid JSON: " + printable(ex.what(), 200));
  }

 private:
  void enter() {
    if (static_cast<int>(m_isObject.size()) >= m_maxDepth)
      throw DataError(m_path, m_what + " nests deeper than " + std::to_string(m_maxDepth) + " levels");
  }
  nlohmann::detail::json_sax_dom_parser<json> m_dom;
  const std::string& m_path;
  const std::string& m_what;
  int m_maxDepth;
  bool m_rejectDuplicates;
  std::vector<std::unordered_set<std::string>> m_keys;
  std::vector<bool> m_isObject;
};
}  // namespace

nlohmann::json parseJson(const char* begin, const char* end, const std::string& path, const std::string& what,
                         int maxDepth, bool rejectDuplicateKeys) {
  const size_t n = static_cast<size_t>(end - begin);
  if (const void* nul = std::memchr(begin, 0, n))
    throw DataError(path, what + " contains a NUL byte at offset " + std::to_string(static_cast<const char*>(nul) - begin) +
                              " (JSON text cannot; the file is corrupt or not what its name says)");
  size_t bad = 0;
  if (!isValidUtf8(begin, n, &bad))
    throw DataError(path, what + " is not valid UTF-8 (bad byte at offset " + std::to_string(bad) + ")");
  nlohmann::json result;
  CheckedDomBuilder sax(result, path, what, maxDepth, rejectDuplicateKeys);
  try {
    nlohmann::json::sax_parse(begin, end, &sax, nlohmann::json::input_format_t::json, true);
  } catch (const DataError&) {
    throw;
  } catch (const std::exception& e) {
    throw DataError(path, what + " is not valid JSON: " + printable(e.what(), 200));
  }
  return result;
}

void requireRegularFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw DataError(path, std::string("cannot open: ") + std::strerror(errno));
  if (S_ISREG(st.st_mode)) return;
  const char* kind = S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO (named pipe)" : S_ISSOCK(st.st_mode) ? "a socket"
                     : S_ISCHR(st.st_mode) ? "a character device" : S_ISBLK(st.st_mode) ? "a block device" : "not a file";
  throw DataError(path, std::string("is ") + kind + ", not a regular file");
}

std::string readSmallFile(const std::string& path, size_t maxBytes, const std::string& what) {
  requireRegularFile(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw DataError(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw DataError(path, "is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > maxBytes) {
    ::close(fd);
    throw DataError(path, what + " of " + humanBytes(static_cast<uint64_t>(st.st_size)) + " is larger than the " + humanBytes(maxBytes) + " limit");
  }
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw DataError(path, std::string("read error: ") + std::strerror(err));
    }
    if (r == 0) break;
    if (out.size() + static_cast<size_t>(r) > maxBytes) {  // it grew while being read
      ::close(fd);
      throw DataError(path, what + " is larger than the " + humanBytes(maxBytes) + " limit");
    }
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
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
