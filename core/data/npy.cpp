// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/npy.h"

#include <cstring>

#include "data/io_util.h"

namespace tq {

using io::quote;

uint64_t NpyHeader::elements() const {
  uint64_t n = 1;
  for (int64_t s : shape) n *= static_cast<uint64_t>(s);
  return n;
}

namespace {

const char kMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

// Minimal parser for the Python literal numpy writes: a dict of string keys whose values are strings,
// True/False/None, integers or tuples/lists of integers. Anything else is an error.
struct DictParser {
  const char* p;
  const char* e;
  const std::string& path;
  const std::string& where;

  [[noreturn]] void fail(const std::string& what) const { throw DataError(path, where + "malformed .npy header: " + what); }
  void ws() {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
  }
  bool eat(char c) {
    ws();
    if (p < e && *p == c) {
      ++p;
      return true;
    }
    return false;
  }
  std::string str() {
    ws();
    if (p >= e || (*p != '\'' && *p != '"')) fail("expected a quoted string");
    const char q = *p++;
    std::string s;
    while (p < e && *p != q) {
      if (*p == '\\') fail("escapes in strings are not supported");
      s.push_back(*p++);
      if (s.size() > 256) fail("string too long");
    }
    if (p >= e) fail("unterminated string");
    ++p;
    return s;
  }
  bool word(const char* w) {
    ws();
    const size_t n = std::strlen(w);
    if (static_cast<size_t>(e - p) >= n && std::memcmp(p, w, n) == 0) {
      p += n;
      return true;
    }
    return false;
  }
  uint64_t integer() {
    ws();
    if (p >= e || *p < '0' || *p > '9') fail("expected a non-negative integer in the shape");
    uint64_t v = 0;
    while (p < e && *p >= '0' && *p <= '9') {
      v = v * 10 + static_cast<uint64_t>(*p - '0');
      if (v > (1ull << 48)) fail("absurd dimension in the shape");
      ++p;
    }
    if (p < e && (*p == 'L' || *p == 'l')) ++p;  // Python 2 longs
    return v;
  }
  std::vector<uint64_t> tuple() {
    ws();
    char close;
    if (eat('(')) close = ')';
    else if (eat('[')) close = ']';
    else fail("shape is not a tuple");
    std::vector<uint64_t> v;
    if (eat(close)) return v;
    for (;;) {
      v.push_back(integer());
      if (v.size() > 32) fail("too many dimensions");
      if (eat(close)) break;
      if (!eat(',')) fail("expected ',' in the shape");
      if (eat(close)) break;
    }
    return v;
  }
};

bool mapDescr(const std::string& d, DType& t) {
  if (d.size() < 3) return false;
  const char order = d[0];
  const std::string rest = d.substr(1);
  const bool little = order == '<' || order == '|' || order == '=';  // '=' is native; hosts we build for are little-endian
  if (!little) return false;
  static const std::pair<const char*, DType> table[] = {{"f2", DType::F16}, {"f4", DType::F32}, {"f8", DType::F64}, {"i1", DType::I8},
                                                        {"i2", DType::I16}, {"i4", DType::I32}, {"i8", DType::I64}, {"u1", DType::U8},
                                                        {"b1", DType::Bool}};
  for (const auto& [n, v] : table)
    if (rest == n) {
      t = v;
      return true;
    }
  return false;
}

}  // namespace

size_t npyHeaderLength(const uint8_t* p, size_t n, const std::string& path, const std::string& where) {
  if (n < 8) return 0;
  if (std::memcmp(p, kMagic, 6) != 0) throw DataError(path, where + "not an .npy array (the \\x93NUMPY signature is missing)");
  const int major = p[6];
  if (major != 1 && major != 2 && major != 3)
    throw DataError(path, where + "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(p[7]));
  if (major == 1) {
    if (n < 10) return 0;
    return 10 + io::rd16(p + 8);
  }
  if (n < 12) return 0;
  const uint32_t len = io::rd32(p + 8);
  if (len > kMaxNpyHeaderBytes) throw DataError(path, where + ".npy header of " + std::to_string(len) + " bytes is larger than the 1 MiB limit");
  return 12 + static_cast<size_t>(len);
}

NpyHeader parseNpyHeader(const uint8_t* p, size_t n, const std::string& path, const std::string& where) {
  const size_t total = npyHeaderLength(p, n, path, where);
  if (total == 0 || total > n) throw DataError(path, where + ".npy header is truncated");
  const size_t start = p[6] == 1 ? 10 : 12;
  const char* b = reinterpret_cast<const char*>(p + start);
  const char* e = reinterpret_cast<const char*>(p + total);
  for (const char* c = b; c < e; ++c)
    if (static_cast<unsigned char>(*c) >= 0x80 || (static_cast<unsigned char>(*c) < 0x20 && *c != '\n' && *c != '\t' && *c != '\r'))
      throw DataError(path, where + ".npy header holds a non-ASCII or control byte");
  DictParser dp{b, e, path, where};
  if (!dp.eat('{')) dp.fail("does not start with '{'");
  bool haveDescr = false, haveOrder = false, haveShape = false, fortran = false;
  NpyHeader h;
  std::vector<uint64_t> shape;
  if (!dp.eat('}')) {
    for (;;) {
      const std::string key = dp.str();
      if (!dp.eat(':')) dp.fail("expected ':' after " + quote(key));
      if (key == "descr") {
        dp.ws();
        if (dp.p < dp.e && (*dp.p == '[' || *dp.p == '{'))
          throw DataError(path, where + "structured .npy dtypes are not supported (need a plain numeric array)");
        h.descr = dp.str();
        haveDescr = true;
      } else if (key == "fortran_order") {
        if (dp.word("True")) fortran = true;
        else if (dp.word("False")) fortran = false;
        else dp.fail("fortran_order is not True or False");
        haveOrder = true;
      } else if (key == "shape") {
        shape = dp.tuple();
        haveShape = true;
      } else {
        dp.fail("unexpected key " + quote(key));
      }
      if (dp.eat('}')) break;
      if (!dp.eat(',')) dp.fail("expected ',' or '}'");
      if (dp.eat('}')) break;
    }
  }
  if (!haveDescr || !haveOrder || !haveShape) dp.fail("needs the keys 'descr', 'fortran_order' and 'shape'");
  if (fortran) throw DataError(path, where + "the array is stored in Fortran (column-major) order; save it with numpy.ascontiguousarray first");
  if (!mapDescr(h.descr, h.dtype)) {
    const bool big = !h.descr.empty() && (h.descr[0] == '>' || h.descr[0] == '!');
    throw DataError(path, where + "unsupported .npy dtype " + quote(h.descr) +
                              (big ? " (big-endian)" : "") + " (supported: <f2, <f4, <f8, |i1, <i2, <i4, <i8, |u1, |b1)");
  }
  uint64_t elems = 1;
  for (uint64_t s : shape) {
    if (!io::mulChecked(elems, s, &elems) || elems > (1ull << 60)) throw DataError(path, where + ".npy shape product overflows");
    h.shape.push_back(static_cast<int64_t>(s));
  }
  h.dataOffset = total;
  h.dataBytes = elems * dtypeSize(h.dtype);
  return h;
}

NpyFile::NpyFile(const std::string& path) : m_file(std::make_shared<MappedFile>(path)) { parse(); }
NpyFile::NpyFile(std::shared_ptr<const MappedFile> file) : m_file(std::move(file)) { parse(); }

void NpyFile::parse() {
  const uint8_t* p = m_file->data();
  const size_t n = m_file->size();
  if (n == 0) throw DataError(path(), "file is empty");
  if (npyHeaderLength(p, n, path(), "") == 0) throw DataError(path(), "too short for an .npy file (" + std::to_string(n) + " bytes)");
  m_header = parseNpyHeader(p, n, path(), "");
  const uint64_t have = n - m_header.dataOffset;
  if (have != m_header.dataBytes)
    throw DataError(path(), "holds " + std::to_string(have) + " data bytes but shape x dtype needs " + std::to_string(m_header.dataBytes) +
                                (have < m_header.dataBytes ? " (truncated)" : " (trailing bytes)"));
}

std::vector<float> NpyFile::readFloat() const {
  std::vector<float> out(m_header.elements());
  convertToFloat(data(), m_header.dtype, out.size(), out.data());
  return out;
}

std::vector<uint8_t> makeNpy(DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes) {
  const char* descr = "<f4";
  switch (dtype) {
    case DType::F16: descr = "<f2"; break;
    case DType::F32: descr = "<f4"; break;
    case DType::F64: descr = "<f8"; break;
    case DType::I8: descr = "|i1"; break;
    case DType::I16: descr = "<i2"; break;
    case DType::I32: descr = "<i4"; break;
    case DType::I64: descr = "<i8"; break;
    case DType::U8: descr = "|u1"; break;
    case DType::Bool: descr = "|b1"; break;
    case DType::BF16: throw std::invalid_argument("makeNpy: numpy has no bfloat16");
  }
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dict += ",";
  dict += "), }";
  while ((10 + dict.size() + 1) % 64) dict.push_back(' ');
  dict.push_back('\n');
  std::vector<uint8_t> out(10 + dict.size() + bytes);
  std::memcpy(out.data(), kMagic, 6);
  out[6] = 1;
  out[7] = 0;
  out[8] = static_cast<uint8_t>(dict.size() & 0xff);
  out[9] = static_cast<uint8_t>(dict.size() >> 8);
  std::memcpy(out.data() + 10, dict.data(), dict.size());
  if (bytes) std::memcpy(out.data() + 10 + dict.size(), data, bytes);
  return out;
}

}  // namespace tq
