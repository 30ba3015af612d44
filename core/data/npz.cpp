// SPDX-License-Identifier: GPL-3.0-or-later
#include "data/npz.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "data/io_util.h"
#include "util/memory_budget.h"

namespace tq {

using io::quote;
using io::rd16;
using io::rd32;
using io::rd64;

namespace {

constexpr uint32_t kSigLocal = 0x04034b50;
constexpr uint32_t kSigCentral = 0x02014b50;
constexpr uint32_t kSigEnd = 0x06054b50;
constexpr uint32_t kSigEnd64 = 0x06064b50;
constexpr uint32_t kSigEnd64Locator = 0x07064b50;
// Deflate cannot expand data by more than ~1032:1 (258-byte matches coded in 2 bits); anything claiming more
// is lying about its size.
constexpr uint64_t kMaxDeflateRatio = 1032;

std::string memberLabel(const ZipMember& m) { return "member " + quote(m.name) + ": "; }

// Pull-style raw-deflate decoder over a bounded input span.
class Inflater {
 public:
  Inflater(const std::string& path, const ZipMember& m, const uint8_t* src, uint64_t len) : m_path(path), m_member(m), m_src(src), m_left(len) {
    std::memset(&m_zs, 0, sizeof m_zs);
    if (inflateInit2(&m_zs, -MAX_WBITS) != Z_OK) throw DataError(path, memberLabel(m) + "cannot initialise zlib");
  }
  ~Inflater() { inflateEnd(&m_zs); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  bool ended() const { return m_ended; }

  // Produces up to n bytes (fewer only at the end of the stream).
  size_t read(uint8_t* dst, size_t n) {
    size_t produced = 0;
    while (produced < n && !m_ended) {
      if (m_zs.avail_in == 0 && m_left > 0) {
        const uint64_t take = std::min<uint64_t>(m_left, 1u << 30);
        m_zs.next_in = const_cast<Bytef*>(m_src);
        m_zs.avail_in = static_cast<uInt>(take);
        m_src += take;
        m_left -= take;
      }
      const size_t want = std::min<size_t>(n - produced, 1u << 30);
      m_zs.next_out = dst + produced;
      m_zs.avail_out = static_cast<uInt>(want);
      const uInt inBefore = m_zs.avail_in;
      const int r = inflate(&m_zs, Z_NO_FLUSH);
      const size_t got = want - m_zs.avail_out;
      produced += got;
      if (r == Z_STREAM_END) {
        m_ended = true;
        break;
      }
      if (r == Z_DATA_ERROR || r == Z_NEED_DICT || r == Z_STREAM_ERROR)
        throw DataError(m_path, memberLabel(m_member) + "corrupt deflate data (" + io::printable(m_zs.msg ? m_zs.msg : "zlib error") + ")");
      if (r == Z_MEM_ERROR) throw DataError(m_path, memberLabel(m_member) + "out of memory while inflating");
      if (got == 0 && m_zs.avail_in == inBefore) {
        // No progress: the input ran out before the deflate stream ended.
        if (m_zs.avail_in == 0 && m_left == 0) throw DataError(m_path, memberLabel(m_member) + "deflate stream is truncated");
        throw DataError(m_path, memberLabel(m_member) + "deflate stream makes no progress");
      }
    }
    return produced;
  }

 private:
  const std::string& m_path;
  const ZipMember& m_member;
  z_stream m_zs;
  const uint8_t* m_src;
  uint64_t m_left;
  bool m_ended = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------
// ZipArchive

ZipArchive::ZipArchive(std::shared_ptr<const MappedFile> file, const ZipLimits& limits) : m_file(std::move(file)) {
  const std::string& path = m_file->path();
  const uint8_t* p = m_file->data();
  const uint64_t size = m_file->size();
  if (size == 0) throw DataError(path, "file is empty");
  if (size < 22) throw DataError(path, "too short for a zip archive (" + std::to_string(size) + " bytes)");
  // End of central directory: the last signature whose comment fits in the file.
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
  for (uint64_t i = size - 22 + 1; i-- > lowest;) {
    if (rd32(p + i) == kSigEnd && i + 22 + rd16(p + i + 20) <= size) {
      eocd = i;
      break;
    }
  }
  if (eocd == UINT64_MAX) throw DataError(path, "not a zip archive (no end-of-central-directory record; truncated?)");
  const uint8_t* e = p + eocd;
  if (rd16(e + 4) != 0 || rd16(e + 6) != 0) throw DataError(path, "multi-disk zip archives are not supported");
  uint64_t entries = rd16(e + 10);
  uint64_t cdSize = rd32(e + 12);
  uint64_t cdOffset = rd32(e + 16);
  uint64_t cdLimit = eocd;  // the central directory ends before this
  if (entries == 0xffff || cdSize == 0xffffffffu || cdOffset == 0xffffffffu) {
    if (eocd < 20 || rd32(p + eocd - 20) != kSigEnd64Locator) throw DataError(path, "ZIP64 archive without a ZIP64 end-of-central-directory locator");
    const uint64_t z = rd64(p + eocd - 20 + 8);
    if (z > eocd - 20 || eocd - 20 - z < 56 || rd32(p + z) != kSigEnd64) throw DataError(path, "ZIP64 end-of-central-directory record is missing or out of range");
    entries = rd64(p + z + 32);
    cdSize = rd64(p + z + 40);
    cdOffset = rd64(p + z + 48);
    cdLimit = z;
  }
  if (cdOffset > cdLimit || cdSize > cdLimit - cdOffset)
    throw DataError(path, "central directory (offset " + std::to_string(cdOffset) + ", " + std::to_string(cdSize) + " bytes) lies outside the file");
  if (entries > cdSize / 46) throw DataError(path, "central directory claims " + std::to_string(entries) + " entries but has room for at most " + std::to_string(cdSize / 46));
  m_members.reserve(static_cast<size_t>(entries));
  uint64_t pos = cdOffset;
  const uint64_t cdEnd = cdOffset + cdSize;
  uint64_t totalInflated = 0;
  for (uint64_t k = 0; k < entries; ++k) {
    if (cdEnd - pos < 46 || rd32(p + pos) != kSigCentral) throw DataError(path, "central directory entry " + std::to_string(k) + " is corrupt");
    const uint8_t* c = p + pos;
    const uint16_t flags = rd16(c + 8);
    ZipMember m;
    m.method = rd16(c + 10);
    m.crc = rd32(c + 16);
    m.compressedSize = rd32(c + 20);
    m.uncompressedSize = rd32(c + 24);
    const uint16_t nameLen = rd16(c + 28), extraLen = rd16(c + 30), commentLen = rd16(c + 32);
    m.localHeaderOffset = rd32(c + 42);
    const uint64_t entryLen = 46ull + nameLen + extraLen + commentLen;
    if (entryLen > cdEnd - pos) throw DataError(path, "central directory entry " + std::to_string(k) + " runs past the directory");
    m.name.assign(reinterpret_cast<const char*>(c + 46), nameLen);
    if (!io::isValidUtf8(m.name)) throw DataError(path, "member name " + quote(m.name) + " is not valid UTF-8");
    // ZIP64 extra field: 64-bit values for the fields saturated at 0xffffffff, in this order.
    const uint8_t* x = c + 46 + nameLen;
    const uint8_t* xe = x + extraLen;
    while (xe - x >= 4) {
      const uint16_t id = rd16(x), len = rd16(x + 2);
      if (len > xe - x - 4) throw DataError(path, memberLabel(m) + "extra field runs past its entry");
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* fe = f + len;
        auto take = [&](uint64_t& v) {
          if (v != 0xffffffffu) return;
          if (fe - f < 8) throw DataError(path, memberLabel(m) + "ZIP64 extra field is too short");
          v = rd64(f);
          f += 8;
        };
        take(m.uncompressedSize);
        take(m.compressedSize);
        take(m.localHeaderOffset);
      }
      x += 4 + len;
    }
    if (flags & 0x1) throw DataError(path, memberLabel(m) + "is encrypted");
    if (m.method != 0 && m.method != 8)
      throw DataError(path, memberLabel(m) + "compression method " + std::to_string(m.method) + " is not supported (only stored and deflate)");
    if (m.method == 0 && m.compressedSize != m.uncompressedSize)
      throw DataError(path, memberLabel(m) + "is stored but its compressed and uncompressed sizes differ");
    if (m.method == 8) {
      if (m.uncompressedSize > m.compressedSize * kMaxDeflateRatio + 1024)
        throw DataError(path, memberLabel(m) + "declares " + std::to_string(m.uncompressedSize) + " bytes from " + std::to_string(m.compressedSize) +
                                  " compressed bytes, more than deflate can produce");
      totalInflated += m.uncompressedSize;
      if (totalInflated > limits.maxTotalInflated)
        throw DataError(path, "compressed members would inflate to more than the " + io::humanBytes(limits.maxTotalInflated) + " limit");
    }
    // Local header: must be inside the file, before the central directory, and name the same member.
    const uint64_t lh = m.localHeaderOffset;
    if (lh > cdOffset || cdOffset - lh < 30 || rd32(p + lh) != kSigLocal) throw DataError(path, memberLabel(m) + "local header is missing or out of range");
    const uint16_t lNameLen = rd16(p + lh + 26), lExtraLen = rd16(p + lh + 28);
    if (30ull + lNameLen + lExtraLen > cdOffset - lh) throw DataError(path, memberLabel(m) + "local header runs into the central directory");
    if (lNameLen != nameLen || std::memcmp(p + lh + 30, m.name.data(), nameLen) != 0)
      throw DataError(path, memberLabel(m) + "local header names a different member");
    m.dataOffset = lh + 30 + lNameLen + lExtraLen;
    if (m.compressedSize > cdOffset - m.dataOffset) throw DataError(path, memberLabel(m) + "data runs past the end of the archive's data area (truncated?)");
    for (const auto& other : m_members)
      if (other.name == m.name) throw DataError(path, "member " + quote(m.name) + " appears twice");
    m_members.push_back(std::move(m));
    pos += entryLen;
  }
  // Member regions (local header + data) must not overlap.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& m : m_members) spans.emplace_back(m.localHeaderOffset, m.dataOffset + m.compressedSize);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) throw DataError(path, "zip members overlap (offset " + std::to_string(spans[i].first) + ")");
}

std::vector<uint8_t> ZipArchive::readPrefix(const ZipMember& m, size_t maxBytes) const {
  const uint8_t* src = m_file->data() + m.dataOffset;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(maxBytes, m.uncompressedSize));
  if (m.method == 0) return std::vector<uint8_t>(src, src + n);
  std::vector<uint8_t> out(n);
  Inflater inf(path(), m, src, m.compressedSize);
  out.resize(inf.read(out.data(), n));
  return out;
}

SharedBytes ZipArchive::read(const ZipMember& m) const {
  const uint8_t* src = m_file->data() + m.dataOffset;
  if (m.method == 0) return SharedBytes{m_file, src, m.uncompressedSize};
  try {
    checkMemory(static_cast<double>(m.uncompressedSize), "inflating member " + quote(m.name) + " (" + io::humanBytes(m.compressedSize) + " compressed)");
  } catch (const BudgetError& e) {
    throw DataError(path(), e.what());
  }
  auto buf = std::make_shared<std::vector<uint8_t>>();
  Inflater inf(path(), m, src, m.compressedSize);
  // Grow with what actually inflates (never more than declared), so a false size costs nothing up front.
  size_t have = 0;
  const uint64_t declared = m.uncompressedSize;
  while (have < declared && !inf.ended()) {
    const size_t target = static_cast<size_t>(std::min<uint64_t>(declared, std::max<uint64_t>(uint64_t{1} << 16, uint64_t{2} * have)));
    buf->resize(target);
    have += inf.read(buf->data() + have, target - have);
  }
  buf->resize(have);
  if (have < declared) throw DataError(path(), memberLabel(m) + "inflates to " + std::to_string(have) + " bytes, fewer than the declared " + std::to_string(declared));
  uint8_t extra;
  if (!inf.ended() && inf.read(&extra, 1) > 0)
    throw DataError(path(), memberLabel(m) + "inflates beyond its declared size of " + std::to_string(declared) + " bytes");
  uLong crc = crc32(0L, Z_NULL, 0);
  for (uint64_t off = 0; off < have;) {
    const uInt step = static_cast<uInt>(std::min<uint64_t>(have - off, 1u << 30));
    crc = crc32(crc, buf->data() + off, step);
    off += step;
  }
  if (static_cast<uint32_t>(crc) != m.crc) throw DataError(path(), memberLabel(m) + "CRC-32 mismatch (corrupt data)");
  std::shared_ptr<const std::vector<uint8_t>> owner = buf;
  return SharedBytes{owner, buf->data(), have};
}

bool ZipArchive::stream(const ZipMember& m, uint64_t skip, const std::function<bool(const uint8_t*, size_t)>& fn, size_t chunkBytes) const {
  const uint8_t* src = m_file->data() + m.dataOffset;
  const uint64_t declared = m.uncompressedSize;
  uLong crc = crc32(0L, Z_NULL, 0);
  if (m.method == 0) {
    for (uint64_t off = 0; off < declared;) {
      const size_t step = static_cast<size_t>(std::min<uint64_t>(declared - off, chunkBytes));
      crc = crc32(crc, src + off, static_cast<uInt>(step));
      if (off + step > skip) {
        const uint64_t from = std::max(off, skip);
        if (!fn(src + from, static_cast<size_t>(off + step - from))) return false;
      }
      m_file->release(src + off, step);
      off += step;
    }
  } else {
    std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(chunkBytes, std::max<uint64_t>(declared, 1))));
    Inflater inf(path(), m, src, m.compressedSize);
    uint64_t off = 0;
    while (off < declared && !inf.ended()) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(declared - off, buf.size()));
      const size_t got = inf.read(buf.data(), want);
      crc = crc32(crc, buf.data(), static_cast<uInt>(got));
      if (off + got > skip) {
        const uint64_t from = std::max(off, skip);
        if (!fn(buf.data() + (from - off), static_cast<size_t>(off + got - from))) return false;
      }
      off += got;
      if (got < want) break;
    }
    if (off < declared) throw DataError(path(), memberLabel(m) + "inflates to " + std::to_string(off) + " bytes, fewer than the declared " + std::to_string(declared));
    uint8_t extra;
    if (!inf.ended() && inf.read(&extra, 1) > 0)
      throw DataError(path(), memberLabel(m) + "inflates beyond its declared size of " + std::to_string(declared) + " bytes");
  }
  if (static_cast<uint32_t>(crc) != m.crc) throw DataError(path(), memberLabel(m) + "CRC-32 mismatch (corrupt data)");
  return true;
}

// ---------------------------------------------------------------------------------------------------
// NpzFile

NpzFile::NpzFile(const std::string& path, const ZipLimits& limits) : m_zip(std::make_shared<MappedFile>(path), limits), m_limits(limits) { parse(); }
NpzFile::NpzFile(std::shared_ptr<const MappedFile> file, const ZipLimits& limits) : m_zip(std::move(file), limits), m_limits(limits) { parse(); }

void NpzFile::parse() {
  const std::string& p = path();
  const auto& members = m_zip.members();
  for (size_t i = 0; i < members.size(); ++i) {
    const ZipMember& m = members[i];
    const bool isNpy = m.name.size() > 4 && m.name.compare(m.name.size() - 4, 4, ".npy") == 0;
    if (!isNpy) {
      m_other.push_back(m.name);
      continue;
    }
    const std::string where = memberLabel(m);
    std::vector<uint8_t> head = m_zip.readPrefix(m, 4096);
    size_t need = npyHeaderLength(head.data(), head.size(), p, where);
    if (need == 0) throw DataError(p, where + "too short for an .npy array (" + std::to_string(m.uncompressedSize) + " bytes)");
    if (need > head.size()) {
      head = m_zip.readPrefix(m, need);
      if (head.size() < need) throw DataError(p, where + ".npy header is truncated");
    }
    NpzTensor t;
    t.name = m.name.substr(0, m.name.size() - 4);
    t.header = parseNpyHeader(head.data(), head.size(), p, where);
    t.member = i;
    const uint64_t have = m.uncompressedSize - t.header.dataOffset;
    if (m.uncompressedSize < t.header.dataOffset || have != t.header.dataBytes)
      throw DataError(p, where + "holds " + std::to_string(m.uncompressedSize >= t.header.dataOffset ? have : 0) +
                             " data bytes but shape x dtype needs " + std::to_string(t.header.dataBytes));
    if (t.name == "__metadata__") {
      if ((t.header.dtype != DType::U8 && t.header.dtype != DType::I8) || t.header.shape.size() != 1)
        throw DataError(p, "__metadata__.npy must be a 1-D uint8 array holding a JSON object");
      if (t.header.dataBytes > kMaxMetadataBytes)
        throw DataError(p, "__metadata__.npy holds " + io::humanBytes(t.header.dataBytes) + " of JSON, more than the " + io::humanBytes(kMaxMetadataBytes) +
                               " limit for metadata (it is inflated before parsing)");
      const SharedBytes b = m_zip.read(m);
      const char* js = reinterpret_cast<const char*>(b.data + t.header.dataOffset);
      const nlohmann::json j = io::parseJson(js, js + t.header.dataBytes, p, "__metadata__");
      if (!j.is_object()) throw DataError(p, "__metadata__ is not a JSON object");
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!it.value().is_string()) throw DataError(p, "metadata value of " + quote(it.key()) + " is not a string");
        m_metadata[it.key()] = it.value().get<std::string>();
      }
      continue;
    }
    m_index[t.name] = m_tensors.size();
    m_tensors.push_back(std::move(t));
  }
}

const NpzTensor* NpzFile::find(const std::string& name) const {
  auto it = m_index.find(name);
  return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

SharedBytes NpzFile::data(const NpzTensor& t) const {
  const ZipMember& m = m_zip.members()[t.member];
  if (m.method == 0) {
    // A stored member is a view of the file; its CRC-32 is checked on first use, like an inflated one's.
    std::lock_guard<std::mutex> lock(m_inflateMutex);
    if (m_storedVerified.size() != m_zip.members().size()) m_storedVerified.assign(m_zip.members().size(), 0);
    if (!m_storedVerified[t.member]) {
      const uint8_t* src = m_zip.file()->data() + m.dataOffset;
      uLong crc = crc32(0L, Z_NULL, 0);
      for (uint64_t off = 0; off < m.uncompressedSize;) {
        const uInt step = static_cast<uInt>(std::min<uint64_t>(m.uncompressedSize - off, 1u << 30));
        crc = crc32(crc, src + off, step);
        off += step;
      }
      if (static_cast<uint32_t>(crc) != m.crc) throw DataError(path(), memberLabel(m) + "CRC-32 mismatch (corrupt data)");
      m_storedVerified[t.member] = 1;
    }
    const uint8_t* d = m_zip.file()->data() + m.dataOffset + t.header.dataOffset;
    return SharedBytes{m_zip.file(), d, t.header.dataBytes};
  }
  std::shared_ptr<const std::vector<uint8_t>> buf;
  {
    std::lock_guard<std::mutex> lock(m_cacheMutex);
    for (auto it = m_cache.begin(); it != m_cache.end(); ++it)
      if (it->first == t.member) {
        buf = it->second;
        m_cache.splice(m_cache.begin(), m_cache, it);
        break;
      }
  }
  if (!buf) {
    // One inflation at a time: parallel workers asking for the same member wait for the first one instead of
    // each inflating their own copy (with eight threads, a 2 GB member cost 16 GB).
    std::lock_guard<std::mutex> inflating(m_inflateMutex);
    {
      std::lock_guard<std::mutex> lock(m_cacheMutex);
      for (const auto& [member, cached] : m_cache)
        if (member == t.member) return SharedBytes{cached, cached->data() + t.header.dataOffset, t.header.dataBytes};
    }
    SharedBytes whole = m_zip.read(m);
    buf = std::static_pointer_cast<const std::vector<uint8_t>>(whole.owner);
    std::lock_guard<std::mutex> lock(m_cacheMutex);
    if (m_limits.cacheMembers > 0) {
      m_cache.emplace_front(t.member, buf);
      while (m_cache.size() > m_limits.cacheMembers) m_cache.pop_back();
    }
  }
  return SharedBytes{buf, buf->data() + t.header.dataOffset, t.header.dataBytes};
}

bool NpzFile::streamData(const NpzTensor& t, const std::function<bool(const uint8_t*, size_t)>& fn) const {
  return m_zip.stream(m_zip.members()[t.member], t.header.dataOffset, fn);
}

std::vector<float> NpzFile::readFloat(const std::string& name) const {
  const NpzTensor* t = find(name);
  if (!t) throw DataError(path(), "array " + quote(name) + " not found");
  const SharedBytes b = data(*t);
  std::vector<float> out(t->header.elements());
  convertToFloat(b.data, t->header.dtype, out.size(), out.data());
  return out;
}

// ---------------------------------------------------------------------------------------------------
// NpzWriter

void NpzWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes) {
  m_members.emplace_back(name + ".npy", makeNpy(dtype, shape, data, bytes));
}

void NpzWriter::addRaw(const std::string& memberName, const std::vector<uint8_t>& bytes) { m_members.emplace_back(memberName, bytes); }

void NpzWriter::setMetadata(const std::map<std::string, std::string>& metadata) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : metadata) j[k] = v;
  const std::string s = j.dump();
  add("__metadata__", DType::U8, {static_cast<int64_t>(s.size())}, s.data(), s.size());
}

namespace {
void put16(std::vector<uint8_t>& o, uint32_t v) { o.push_back(static_cast<uint8_t>(v)); o.push_back(static_cast<uint8_t>(v >> 8)); }
void put32(std::vector<uint8_t>& o, uint32_t v) { put16(o, v & 0xffff); put16(o, v >> 16); }
}  // namespace

std::vector<uint8_t> NpzWriter::serialize(bool useDeflate) const {
  std::vector<uint8_t> out, cd;
  for (const auto& [name, bytes] : m_members) {
    std::vector<uint8_t> payload;
    if (useDeflate) {
      z_stream zs;
      std::memset(&zs, 0, sizeof zs);
      deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
      payload.resize(deflateBound(&zs, static_cast<uLong>(bytes.size())));
      zs.next_in = const_cast<Bytef*>(bytes.data());
      zs.avail_in = static_cast<uInt>(bytes.size());
      zs.next_out = payload.data();
      zs.avail_out = static_cast<uInt>(payload.size());
      deflate(&zs, Z_FINISH);
      payload.resize(zs.total_out);
      deflateEnd(&zs);
    } else {
      payload = bytes;
    }
    const uint32_t crc = static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), bytes.data(), static_cast<uInt>(bytes.size())));
    const uint32_t offset = static_cast<uint32_t>(out.size());
    const uint16_t method = useDeflate ? 8 : 0;
    put32(out, kSigLocal); put16(out, 20); put16(out, 0); put16(out, method); put16(out, 0); put16(out, 0x21);
    put32(out, crc); put32(out, static_cast<uint32_t>(payload.size())); put32(out, static_cast<uint32_t>(bytes.size()));
    put16(out, static_cast<uint32_t>(name.size())); put16(out, 0);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), payload.begin(), payload.end());
    put32(cd, kSigCentral); put16(cd, 20); put16(cd, 20); put16(cd, 0); put16(cd, method); put16(cd, 0); put16(cd, 0x21);
    put32(cd, crc); put32(cd, static_cast<uint32_t>(payload.size())); put32(cd, static_cast<uint32_t>(bytes.size()));
    put16(cd, static_cast<uint32_t>(name.size())); put16(cd, 0); put16(cd, 0); put16(cd, 0); put16(cd, 0); put32(cd, 0); put32(cd, offset);
    cd.insert(cd.end(), name.begin(), name.end());
  }
  const uint32_t cdOffset = static_cast<uint32_t>(out.size());
  out.insert(out.end(), cd.begin(), cd.end());
  put32(out, kSigEnd); put16(out, 0); put16(out, 0);
  put16(out, static_cast<uint32_t>(m_members.size())); put16(out, static_cast<uint32_t>(m_members.size()));
  put32(out, static_cast<uint32_t>(cd.size())); put32(out, cdOffset); put16(out, 0);
  return out;
}

}  // namespace tq
