// The fleet prefix-cache index, native implementation (plain C++, no N-API types; addon.cc binds it).
//
// src/kernels/js/prefix-index.ts is the executable specification: this class keeps the same block table
// (open addressing, linear probing, Fibonacci home slot, backward-shift deletion), the same inline/arena
// holder representation with the same chunk classes and LIFO free lists, the same epochs and sweeps,
// the same xorshift32 eviction sampler and the same growth points, so that any operation sequence gives
// bit-identical match results, stats and dumps on every backend. What differs is only how memory is
// held: a slot is one 16-byte struct (key lo, key hi, a, b) instead of four parallel arrays, so a probe
// touches one cache line; the per-replica match scratch (generation, depth, three tier counts) is one
// 20-byte struct per replica; and the big arrays may be backed by transparent huge pages on Linux.
//
// Reads are prefetched ahead (match: the home slots and holder chunks of upcoming blocks; apply: the
// home slots of upcoming records; eviction: all sixteen sample slots before scanning them). Prefetches
// are hints with no effect on results, so the exact semantics of the specification are kept.
//
// Memory: every allocation is checked. When one fails, Apply returns NO_MEMORY at the record that needed
// it (the records before it stay applied, that record has no effect beyond the evictions it already
// made, and the index stays consistent); Create returns nullptr.
#ifndef DYSTRO_NATIVE_PREFIX_INDEX_H_
#define DYSTRO_NATIVE_PREFIX_INDEX_H_

#include <cstddef>
#include <cstdint>

namespace dystro {

// Record layout of Apply: 4 u32 words [op | tier << 8, replica, hash lo, hash hi].
constexpr size_t kIndexRecordWords = 4;
constexpr uint32_t kIndexOpStore = 1;
constexpr uint32_t kIndexOpRemove = 2;
constexpr uint32_t kIndexOpClear = 3;  // hash ignored
constexpr uint32_t kIndexOpSpeculate = 4;  // tier ignored (but must be valid); expiry = now + ttlMs
constexpr uint32_t kIndexMaxTier = 2;  // GPU 0, CPU 1, disk 2

// Match output: [replica, depth, gpu, cpu, disk] per matched replica.
constexpr size_t kIndexMatchStride = 5;
// Stats: entries, blocks, slots, arenaPairs, bytes, evictions, deadRemoved, sweeps, speculative.
constexpr size_t kIndexStatsLength = 9;
// Dump: [hash lo, hash hi, replica, tiers | speculative << 3] per live holder.
constexpr size_t kIndexDumpWords = 4;

// Replica ids are 20 bits with 0xFFFFF reserved, so at most this many replicas.
constexpr uint32_t kIndexMaxReplicas = 0xFFFFF;
// Largest maxEntries accepted (the host allows up to 2^31; the table math is 64-bit throughout).
constexpr uint64_t kIndexMaxEntries = 1ULL << 32;

struct PrefixIndexOptions {
  uint64_t maxEntries;       // most (block, replica) holders stored, dead ones included
  uint32_t replicaCapacity;  // 1 … kIndexMaxReplicas
  uint32_t seed;             // eviction sampler seed (0 means the spec's default 0x9E3779B9)
  uint32_t ttlMs;            // lifetime of speculative holders, ms
};

class PrefixIndex {
 public:
  // A new empty index, or nullptr when the options are out of range or memory is short.
  static PrefixIndex* Create(const PrefixIndexOptions& options);
  ~PrefixIndex();
  PrefixIndex(const PrefixIndex&) = delete;
  PrefixIndex& operator=(const PrefixIndex&) = delete;

  // Applies `count` records read from records[0, recordsLen). Returns count, BAD_ARG when recordsLen <
  // 4·count or at the first record with an unknown op, a tier above 2 or a replica ≥ replicaCapacity
  // (the records before it stay applied), or NO_MEMORY (see the top of the file).
  int64_t Apply(const uint32_t* records, size_t recordsLen, size_t count, uint32_t now);

  // Leading-block match of hashes[0, count): kIndexMatchStride words per replica holding block 0 (live),
  // in block 0's holder order. Returns the number of replicas or OUT_TOO_SMALL. Reads the table only.
  int64_t Match(const uint64_t* hashes, size_t count, uint32_t now, uint32_t* out, size_t outLen);

  // Writes min(outLen, kIndexStatsLength) counters.
  void Stats(double* out, size_t outLen) const;

  // Number of live holders at `now` (the size of a dump, in holders).
  size_t CountLive(uint32_t now) const;
  // Writes kIndexDumpWords words per live holder in slot order then holder order, at most outLen words
  // (whole holders only); returns the number of words written.
  size_t Dump(uint32_t now, uint32_t* out, size_t outLen) const;

  // Bytes of memory this index holds (for the host's external-memory accounting).
  size_t AllocatedBytes() const;

 private:
  struct Slot {
    uint32_t lo;  // key, low 32 bits
    uint32_t hi;  // key, high 32 bits
    uint32_t a;   // kEmpty, an inline holder word (top bit 0), or kOverflow | chunk
    uint32_t b;   // inline: stamp; overflow: count | class << 24
  };
  // Match scratch of one replica: valid when gen equals the current match generation. depth and gen come
  // first and together so that one 64-bit compare asks "is this replica still walking, at this block?".
  struct Scratch {
    uint32_t depth;
    uint32_t gen;
    // Leading blocks counted on GPU, CPU, disk (best tier of each block); [3] absorbs speculative blocks
    // so the count needs no branch.
    uint32_t tiers[4];
  };

  PrefixIndex() = default;

  uint64_t HomeOf(uint32_t lo, uint32_t hi) const;
  int64_t Find(uint32_t lo, uint32_t hi) const;
  void PrefetchSlot(uint64_t s, uint64_t fromOffset) const;
  void PrefetchHome(uint64_t key, uint64_t fromOffset) const;
  int64_t ProbeLine(uint32_t lo, uint32_t hi) const;
  uint32_t NextRandom();
  bool IsLive(uint32_t w, uint32_t stamp, uint32_t now) const;
  uint32_t Word(uint32_t replica, uint32_t tiers, bool spec) const;

  bool AllocChunk(uint32_t cls, uint32_t* chunk);
  void FreeChunk(uint32_t chunk, uint32_t cls);

  uint32_t Count(uint64_t s) const;
  int64_t HolderOf(uint64_t s, uint32_t replica) const;
  uint32_t GetWord(uint64_t s, uint32_t i) const;
  uint32_t GetStamp(uint64_t s, uint32_t i) const;
  void SetHolder(uint64_t s, uint32_t i, uint32_t w, uint32_t stamp);
  bool AppendHolder(uint64_t s, uint32_t w, uint32_t stamp);
  void RemoveHolder(uint64_t s, uint32_t i);
  void RemoveSlot(uint64_t s);
  bool InsertSlot(uint32_t lo, uint32_t hi, uint32_t w, uint32_t stamp);
  bool Grow();

  void EvictOne(uint32_t now);
  void Reserve(uint32_t now);

  bool Store(uint32_t replica, uint32_t tier, uint32_t lo, uint32_t hi, uint32_t now);
  void Remove(uint32_t replica, uint32_t tier, uint32_t lo, uint32_t hi, uint32_t now);
  bool Speculate(uint32_t replica, uint32_t lo, uint32_t hi, uint32_t now);
  void Clear(uint32_t replica);
  void Sweep(uint32_t replica);

  PrefixIndexOptions options_{};
  Slot* slots_ = nullptr;
  uint64_t cap_ = 0;    // slots, a power of two
  uint64_t mask_ = 0;   // cap_ − 1
  uint32_t shift_ = 0;  // 32 − log2(cap_)
  uint64_t maxCap_ = 0;
  uint32_t* arena_ = nullptr;  // (word, stamp) pairs
  uint64_t arenaWords_ = 0;    // u32 words allocated (the spec's arena.length)
  uint64_t arenaTop_ = 0;      // pairs cut so far
  uint32_t freeHead_[21] = {};  // per class: first free chunk + 1, 0 = none
  uint8_t* epoch_ = nullptr;    // per replica, 7 bits
  uint8_t* wipes_ = nullptr;    // per replica, wipes since the last sweep
  Scratch* scratch_ = nullptr;  // per replica
  uint32_t rng_ = 0;
  uint32_t matchGen_ = 0;

  uint64_t entries_ = 0;
  uint64_t blocks_ = 0;
  uint64_t evictions_ = 0;
  uint64_t deadRemoved_ = 0;
  uint64_t sweeps_ = 0;
  uint64_t speculative_ = 0;
};

}  // namespace dystro

#endif  // DYSTRO_NATIVE_PREFIX_INDEX_H_
