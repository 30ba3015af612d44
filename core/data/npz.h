// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
/// NumPy .npz reader: a zip archive (stored or deflate members, ZIP64 aware) of .npy arrays. The zip
/// central directory is parsed here (no libzip); deflate goes through zlib. Inflation never produces more
/// than a member's declared size, declared sizes are checked against what deflate can possibly produce
/// and against a global limit, member regions may not overlap (no "overlapping file" zip bombs), and the
/// CRC-32 is verified whenever a whole member is inflated.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/npy.h"
#include "data/safetensors.h"

namespace tq {

struct ZipLimits {
  /// Sum of the declared uncompressed sizes of all deflate members (bounds what inflation may allocate).
  uint64_t maxTotalInflated = 16ull << 30;
  /// Inflated members kept in memory for repeated access (LRU).
  size_t cacheMembers = 4;
};

struct ZipMember {
  std::string name;
  uint16_t method = 0;             ///< 0 stored, 8 deflate
  uint32_t crc = 0;
  uint64_t compressedSize = 0;
  uint64_t uncompressedSize = 0;
  uint64_t localHeaderOffset = 0;
  uint64_t dataOffset = 0;         ///< of the (compressed) bytes in the file
};

class ZipArchive {
 public:
  ZipArchive(std::shared_ptr<const MappedFile> file, const ZipLimits& limits = {});
  const std::string& path() const { return m_file->path(); }
  const std::vector<ZipMember>& members() const { return m_members; }
  const std::shared_ptr<const MappedFile>& file() const { return m_file; }
  /// At most maxBytes from the start of the member (fewer if it is shorter). No CRC check.
  std::vector<uint8_t> readPrefix(const ZipMember& m, size_t maxBytes) const;
  /// The whole member: exactly its declared size, CRC-32 verified. Stored members are views into the file.
  SharedBytes read(const ZipMember& m) const;
  /// Streams the member's bytes from offset `skip` on in chunks of at most chunkBytes (bounded memory);
  /// checks the declared size and the CRC-32. Returns false when fn returned false (cancelled).
  bool stream(const ZipMember& m, uint64_t skip, const std::function<bool(const uint8_t*, size_t)>& fn, size_t chunkBytes = 1u << 20) const;

 private:
  std::shared_ptr<const MappedFile> m_file;
  std::vector<ZipMember> m_members;
};

struct NpzTensor {
  std::string name;   ///< member name without ".npy"
  NpyHeader header;
  size_t member = 0;  ///< index into archive().members()
};

class NpzFile {
 public:
  /// The most JSON a __metadata__ member may hold (it is inflated and parsed whole).
  static constexpr uint64_t kMaxMetadataBytes = 16ull << 20;
  explicit NpzFile(const std::string& path, const ZipLimits& limits = {});
  explicit NpzFile(std::shared_ptr<const MappedFile> file, const ZipLimits& limits = {});
  const std::string& path() const { return m_zip.path(); }
  const ZipArchive& archive() const { return m_zip; }
  /// Arrays in archive order (the metadata member excluded).
  const std::vector<NpzTensor>& tensors() const { return m_tensors; }
  const NpzTensor* find(const std::string& name) const;
  /// From the member __metadata__.npy (a uint8 array holding a UTF-8 JSON object of strings).
  const std::map<std::string, std::string>& metadata() const { return m_metadata; }
  /// Members that are not .npy arrays (ignored).
  const std::vector<std::string>& otherMembers() const { return m_other; }
  /// The array bytes of a tensor (after the .npy header): a view for stored members, an inflated (cached)
  /// copy for deflate members.
  SharedBytes data(const NpzTensor& t) const;
  /// Streams the array bytes with bounded memory (see ZipArchive::stream).
  bool streamData(const NpzTensor& t, const std::function<bool(const uint8_t*, size_t)>& fn) const;
  std::vector<float> readFloat(const std::string& name) const;

 private:
  void parse();
  ZipArchive m_zip;
  ZipLimits m_limits;
  std::vector<NpzTensor> m_tensors;
  std::map<std::string, size_t> m_index;
  std::map<std::string, std::string> m_metadata;
  std::vector<std::string> m_other;
  mutable std::mutex m_cacheMutex;
  mutable std::mutex m_inflateMutex;
  mutable std::vector<char> m_storedVerified;  ///< per member: the CRC-32 of a stored member was checked
  mutable std::list<std::pair<size_t, std::shared_ptr<const std::vector<uint8_t>>>> m_cache;
};

/// Builds an .npz in memory (tests, fixtures): members stored or deflate-compressed.
class NpzWriter {
 public:
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes);
  void addRaw(const std::string& memberName, const std::vector<uint8_t>& bytes);
  void setMetadata(const std::map<std::string, std::string>& metadata);
  std::vector<uint8_t> serialize(bool useDeflate) const;

 private:
  std::vector<std::pair<std::string, std::vector<uint8_t>>> m_members;
};

}  // namespace tq
