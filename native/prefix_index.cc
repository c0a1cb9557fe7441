// The prefix index, native implementation. See prefix_index.h, and src/kernels/js/prefix-index.ts for the
// specification: every method here is the step of the same name there, in the same order, so the two
// make identical choices (slot positions, chunk addresses, evictions, counters). Comments explain where
// the C++ differs in form, never in effect.
#include "prefix_index.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(_WIN32)
#include <malloc.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
// A read hint with high temporal locality (prefetcht0): it never faults, so a stale address is harmless.
#define DYSTRO_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define DYSTRO_PREFETCH(p) ((void)(p))
#endif

namespace dystro {
namespace {

constexpr uint32_t kEmptySlot = 0xFFFFFFFFu;
constexpr uint32_t kOverflow = 0x80000000u;
constexpr uint32_t kReplicaMask = 0xFFFFFu;
constexpr uint32_t kTierShift = 20;
constexpr uint32_t kSpecBit = 1u << 23;
constexpr uint32_t kEpochShift = 24;
constexpr uint32_t kEpochMask = 0x7F;
constexpr uint32_t kCountMask = 0xFFFFFF;  // count field of an overflow slot's b
constexpr int kSamples = 16;
constexpr uint32_t kMaxClass = 20;
constexpr uint8_t kWipesBeforeSweep = 127;
constexpr uint64_t kMinCap = 1024;          // slots
constexpr uint64_t kInitialArenaWords = 2048;  // u32 words (1,024 pairs)
constexpr uint32_t kDefaultSeed = 0x9E3779B9u;

// Match pipeline distances, in blocks ahead of the block being processed: the home slot's cache line is
// prefetched kPrefetchAhead blocks ahead; kFindAhead blocks ahead the key is probed within that line (it
// has had time to arrive) and what the block needs next is prefetched: its holders' arena chunk, or the
// lines its probe run continues into. A walk over a table far larger than the caches is bound by how
// many misses are in flight, not by the work per block (~4 ns when the lines are cached); on a 256 MiB
// table, where one random line costs ~175 ns alone and ~11 ns each with 16 in flight, these distances
// measured best.
constexpr size_t kPrefetchAhead = 48;
constexpr size_t kFindAhead = 16;
constexpr size_t kRing = 32;  // probe results in flight: > kFindAhead, a power of two
// Linear probing at up to 3/4 load leaves recently inserted keys far from home: on a 10M-block table
// (61% full) 15% of blocks live past their home slot's line and 2.5% two or more lines past it, most of
// them in the newest chains. When a probe run leaves the home line, stage 2 prefetches this many lines.
constexpr uint64_t kRunLines = 3;
constexpr int64_t kUnresolved = -2;  // ProbeLine: the run continues past the home line
// Blocks whose home lines are read before block 0 is known to be held (see Match).
constexpr size_t kEarlyAhead = 8;
static_assert(kEarlyAhead <= kPrefetchAhead, "the early window is part of the prefetch window");
static_assert(kFindAhead < kRing && (kRing & (kRing - 1)) == 0, "ring of probe results");
static_assert(kFindAhead < kPrefetchAhead, "lookups come after their prefetch");

// Apply: records whose home slot (and the next line, where the probe run of a new key usually ends at
// 3/4 load) is prefetched ahead of the one being applied.
constexpr size_t kApplyAhead = 8;

constexpr uint64_t kSlotsPerLine = 4;  // 16-byte slots in a 64-byte line (the table is line-aligned)

constexpr size_t kHugePage = size_t{2} << 20;  // bytes

inline uint32_t TierBits(uint32_t w) { return (w >> kTierShift) & 7; }

// Signed 32-bit difference now − stamp of two wrapping millisecond stamps (the spec's `age`).
inline int32_t Age(uint32_t now, uint32_t stamp) { return static_cast<int32_t>(now - stamp); }

// The tier a block counts for in a match: its best tier, GPU (0) before CPU (1) before disk (2); 3 when
// it has none (speculative), a counter nobody reads.
constexpr uint8_t kBestTier[8] = {3, 0, 1, 0, 2, 0, 1, 0};

// Big arrays (the slot table and the arena). From 2 MiB up they are 2 MiB-aligned and, on Linux, marked
// for transparent huge pages: a match walks hundreds of random slots of a table that can be hundreds of
// MiB, and with 4 KiB pages nearly every one of those reads would also miss the TLB. madvise is a hint;
// when THP is off or unsupported nothing changes. Smaller arrays are cache-line aligned, so a 16-byte
// slot never straddles two lines.
void* AllocBig(uint64_t request) {
  if (request > SIZE_MAX / 2) return nullptr;  // 32-bit hosts: never truncate a size
  size_t bytes = request == 0 ? 1 : static_cast<size_t>(request);
#if defined(_WIN32)
  return _aligned_malloc(bytes, 64);
#else
  void* p = nullptr;
  if (bytes >= kHugePage) {
    const size_t rounded = (bytes + kHugePage - 1) & ~(kHugePage - 1);
    if (rounded < bytes || posix_memalign(&p, kHugePage, rounded) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, rounded, MADV_HUGEPAGE);
#endif
    return p;
  }
  if (posix_memalign(&p, 64, bytes) != 0) return nullptr;
  return p;
#endif
}

void FreeBig(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

// The bytes AllocBig actually reserves for a request (for external-memory accounting).
size_t BigBytes(uint64_t request) {
  const size_t bytes = static_cast<size_t>(request);
  return bytes >= kHugePage ? (bytes + kHugePage - 1) & ~(kHugePage - 1) : bytes;
}

// The spec's maxCap = max(1024, 2^ceil(log2(maxEntries·4/3 + 1))), in integers. With n = maxEntries the
// argument is exactly (4n + 3)/3, so ceil(log2) picks the smallest 2^k ≥ (4n + 3)/3. Equality needs
// 3·2^k = 4n + 3, impossible for k ≥ 1 (k = 1: n = 3/4; k ≥ 2: 0 against 3 mod 4) and true only for
// n = 0, k = 0, which the 1024 floor hides; so the answer is the smallest 2^k with 3·2^k > 4n + 3. The
// spec's double arithmetic cannot pick another k: for n ≥ 1 the argument is not a power of two and is an
// integer or a third off one, so never within 1/3 of a power of two, while its rounding error is below
// 2^−18 for n ≤ 2^32, and log2's sub-ulp error is far below the resulting distance from an integer.
uint64_t MaxCapFor(uint64_t maxEntries) {
  uint64_t cap = 1;
  while (3 * cap <= 4 * maxEntries + 3) cap <<= 1;
  return cap < kMinCap ? kMinCap : cap;
}

}  // namespace

// ---------- creation ----------

PrefixIndex* PrefixIndex::Create(const PrefixIndexOptions& options) {
  if (options.replicaCapacity < 1 || options.replicaCapacity > kIndexMaxReplicas) return nullptr;
  if (options.maxEntries > kIndexMaxEntries) return nullptr;
  PrefixIndex* index = new (std::nothrow) PrefixIndex();
  if (index == nullptr) return nullptr;
  index->options_ = options;
  index->maxCap_ = MaxCapFor(options.maxEntries);
  index->cap_ = kMinCap;
  index->mask_ = kMinCap - 1;
  index->shift_ = 32 - 10;  // log2(kMinCap) = 10
  index->slots_ = static_cast<Slot*>(AllocBig(kMinCap * sizeof(Slot)));
  index->arena_ = static_cast<uint32_t*>(AllocBig(kInitialArenaWords * sizeof(uint32_t)));
  index->arenaWords_ = kInitialArenaWords;
  const size_t n = options.replicaCapacity;
  index->epoch_ = static_cast<uint8_t*>(std::calloc(n, 1));
  index->wipes_ = static_cast<uint8_t*>(std::calloc(n, 1));
  index->scratch_ = static_cast<Scratch*>(std::calloc(n, sizeof(Scratch)));
  if (index->slots_ == nullptr || index->arena_ == nullptr || index->epoch_ == nullptr || index->wipes_ == nullptr ||
      index->scratch_ == nullptr) {
    delete index;
    return nullptr;
  }
  for (uint64_t s = 0; s < kMinCap; s++) index->slots_[s] = Slot{0, 0, kEmptySlot, 0};
  std::memset(index->arena_, 0, kInitialArenaWords * sizeof(uint32_t));
  index->rng_ = options.seed != 0 ? options.seed : kDefaultSeed;
  return index;
}

PrefixIndex::~PrefixIndex() {
  FreeBig(slots_);
  FreeBig(arena_);
  std::free(epoch_);
  std::free(wipes_);
  std::free(scratch_);
}

size_t PrefixIndex::AllocatedBytes() const {
  return sizeof(PrefixIndex) + BigBytes(cap_ * sizeof(Slot)) + BigBytes(arenaWords_ * sizeof(uint32_t)) +
         static_cast<size_t>(options_.replicaCapacity) * (2 + sizeof(Scratch));
}

// ---------- slots ----------

// Fibonacci hashing: imul(lo ^ hi, 0x9E3779B1) >>> (32 − log2 cap).
inline uint64_t PrefixIndex::HomeOf(uint32_t lo, uint32_t hi) const {
  return static_cast<uint32_t>((lo ^ hi) * 0x9E3779B1u) >> shift_;
}

// Slot holding the key, or −1. Terminates: the table always has an empty slot (blocks ≤ maxEntries <
// 3/4 of maxCap, and below maxCap the table grows before passing 3/4).
inline int64_t PrefixIndex::Find(uint32_t lo, uint32_t hi) const {
  uint64_t s = HomeOf(lo, hi);
  for (;;) {
    const Slot& slot = slots_[s];
    if (slot.a == kEmptySlot) return -1;
    if (slot.lo == lo && slot.hi == hi) return static_cast<int64_t>(s);
    s = (s + 1) & mask_;
  }
}

// Prefetches the line of slot s, and the next line too when s sits at offset `fromOffset` or later
// within its line (0: always; kSlotsPerLine: never), where a probe run or scan is likely to cross over.
inline void PrefixIndex::PrefetchSlot(uint64_t s, uint64_t fromOffset) const {
  DYSTRO_PREFETCH(&slots_[s]);
  if ((s & (kSlotsPerLine - 1)) >= fromOffset) DYSTRO_PREFETCH(&slots_[(s + kSlotsPerLine) & mask_]);
}

inline void PrefixIndex::PrefetchHome(uint64_t key, uint64_t fromOffset) const {
  PrefetchSlot(HomeOf(static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)), fromOffset);
}

// xorshift32 (Marsaglia 2003, shifts 13, 17, 5), the spec's sampler.
inline uint32_t PrefixIndex::NextRandom() {
  uint32_t x = rng_;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  rng_ = x;
  return x;
}

inline bool PrefixIndex::IsLive(uint32_t w, uint32_t stamp, uint32_t now) const {
  if (((w >> kEpochShift) & kEpochMask) != epoch_[w & kReplicaMask]) return false;
  if (TierBits(w) != 0) return true;
  return (w & kSpecBit) != 0 && Age(now, stamp) < 0;
}

inline uint32_t PrefixIndex::Word(uint32_t replica, uint32_t tiers, bool spec) const {
  return replica | (tiers << kTierShift) | (spec ? kSpecBit : 0) | (static_cast<uint32_t>(epoch_[replica]) << kEpochShift);
}

// ---------- arena ----------

// A chunk of 2^cls pairs: the head of the class's free list, else cut from the top, doubling the arena
// (contents kept) until it fits. False when the bigger arena could not be allocated (nothing changed).
bool PrefixIndex::AllocChunk(uint32_t cls, uint32_t* chunk) {
  static_assert(sizeof(freeHead_) / sizeof(freeHead_[0]) == kMaxClass + 1, "one free list per class 0 … 20");
  const uint32_t head = freeHead_[cls];
  if (head != 0) {
    *chunk = head - 1;
    freeHead_[cls] = arena_[static_cast<uint64_t>(*chunk) * 2];
    return true;
  }
  const uint64_t pairs = uint64_t{1} << cls;
  // Chunk indices travel in 31 bits of a slot word (kOverflow | chunk): a 16 GiB arena is the end.
  if (arenaTop_ + pairs > kOverflow) return false;
  if ((arenaTop_ + pairs) * 2 > arenaWords_) {
    uint64_t words = arenaWords_;
    while ((arenaTop_ + pairs) * 2 > words) words *= 2;
    uint32_t* bigger = static_cast<uint32_t*>(AllocBig(words * sizeof(uint32_t)));
    if (bigger == nullptr) return false;
    std::memcpy(bigger, arena_, arenaWords_ * sizeof(uint32_t));
    std::memset(bigger + arenaWords_, 0, (words - arenaWords_) * sizeof(uint32_t));
    FreeBig(arena_);
    arena_ = bigger;
    arenaWords_ = words;
  }
  *chunk = static_cast<uint32_t>(arenaTop_);
  arenaTop_ += pairs;
  return true;
}

inline void PrefixIndex::FreeChunk(uint32_t chunk, uint32_t cls) {
  arena_[static_cast<uint64_t>(chunk) * 2] = freeHead_[cls];
  freeHead_[cls] = chunk + 1;
}

// ---------- holders of one slot ----------

inline uint32_t PrefixIndex::Count(uint64_t s) const {
  return (slots_[s].a & kOverflow) == 0 ? 1 : slots_[s].b & kCountMask;
}

int64_t PrefixIndex::HolderOf(uint64_t s, uint32_t replica) const {
  const uint32_t a = slots_[s].a;
  if ((a & kOverflow) == 0) return (a & kReplicaMask) == replica ? 0 : -1;
  const uint32_t* pairs = arena_ + static_cast<uint64_t>(a & ~kOverflow) * 2;
  const uint32_t n = slots_[s].b & kCountMask;
  for (uint32_t i = 0; i < n; i++) {
    if ((pairs[2 * i] & kReplicaMask) == replica) return i;
  }
  return -1;
}

inline uint32_t PrefixIndex::GetWord(uint64_t s, uint32_t i) const {
  const uint32_t a = slots_[s].a;
  return (a & kOverflow) == 0 ? a : arena_[(static_cast<uint64_t>(a & ~kOverflow) + i) * 2];
}

inline uint32_t PrefixIndex::GetStamp(uint64_t s, uint32_t i) const {
  const uint32_t a = slots_[s].a;
  return (a & kOverflow) == 0 ? slots_[s].b : arena_[(static_cast<uint64_t>(a & ~kOverflow) + i) * 2 + 1];
}

inline void PrefixIndex::SetHolder(uint64_t s, uint32_t i, uint32_t w, uint32_t stamp) {
  Slot& slot = slots_[s];
  if ((slot.a & kOverflow) == 0) {
    slot.a = w;
    slot.b = stamp;
  } else {
    const uint64_t at = (static_cast<uint64_t>(slot.a & ~kOverflow) + i) * 2;
    arena_[at] = w;
    arena_[at + 1] = stamp;
  }
}

// Appends a holder to an occupied slot (inline → chunk of 2, full chunk → next class). False, with nothing
// changed, when the arena could not grow.
bool PrefixIndex::AppendHolder(uint64_t s, uint32_t w, uint32_t stamp) {
  const uint32_t a = slots_[s].a;
  if ((a & kOverflow) == 0) {
    uint32_t chunk;
    if (!AllocChunk(1, &chunk)) return false;
    uint32_t* p = arena_ + static_cast<uint64_t>(chunk) * 2;
    p[0] = a;
    p[1] = slots_[s].b;
    p[2] = w;
    p[3] = stamp;
    slots_[s].a = kOverflow | chunk;
    slots_[s].b = 2 | (1u << 24);
    return true;
  }
  uint32_t chunk = a & ~kOverflow;
  const uint32_t n = slots_[s].b & kCountMask;
  uint32_t cls = slots_[s].b >> 24;
  if (n == (1u << cls)) {
    // n ≤ replicaCapacity ≤ 2^20 − 1 distinct holders: a full chunk is at most class 19, cls + 1 ≤ kMaxClass.
    uint32_t bigger;
    if (!AllocChunk(cls + 1, &bigger)) return false;
    // memmove: a chunk taken from the free list never overlaps a live one, but the spec's copyWithin
    // has memmove semantics and costs nothing more here.
    std::memmove(arena_ + static_cast<uint64_t>(bigger) * 2, arena_ + static_cast<uint64_t>(chunk) * 2,
                 static_cast<size_t>(n) * 2 * sizeof(uint32_t));
    FreeChunk(chunk, cls);
    chunk = bigger;
    cls += 1;
    slots_[s].a = kOverflow | chunk;
  }
  uint32_t* p = arena_ + (static_cast<uint64_t>(chunk) + n) * 2;
  p[0] = w;
  p[1] = stamp;
  slots_[s].b = (n + 1) | (cls << 24);
  return true;
}

// Removes holder i of slot s (the last holder moves into the gap); removes the block when it was the last.
void PrefixIndex::RemoveHolder(uint64_t s, uint32_t i) {
  const uint32_t w = GetWord(s, i);
  if ((w & kSpecBit) != 0 && TierBits(w) == 0) speculative_--;
  entries_--;
  const uint32_t a = slots_[s].a;
  if ((a & kOverflow) == 0) {
    RemoveSlot(s);
    return;
  }
  const uint32_t chunk = a & ~kOverflow;
  const uint32_t n = slots_[s].b & kCountMask;
  const uint32_t cls = slots_[s].b >> 24;
  const uint32_t last = n - 1;
  uint32_t* pairs = arena_ + static_cast<uint64_t>(chunk) * 2;
  if (i != last) {
    pairs[2 * i] = pairs[2 * last];
    pairs[2 * i + 1] = pairs[2 * last + 1];
  }
  if (last == 1) {
    slots_[s].a = pairs[0];
    slots_[s].b = pairs[1];
    FreeChunk(chunk, cls);
  } else {
    slots_[s].b = last | (cls << 24);
  }
}

// Empties slot s and shifts the following run back (linear-probing deletion without tombstones).
void PrefixIndex::RemoveSlot(uint64_t s) {
  blocks_--;
  uint64_t hole = s;
  uint64_t j = s;
  for (;;) {
    j = (j + 1) & mask_;
    const Slot& next = slots_[j];
    if (next.a == kEmptySlot) break;
    const uint64_t h = HomeOf(next.lo, next.hi);
    // Leave j where it is when its home lies cyclically in (hole, j].
    const bool inRange = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
    if (inRange) continue;
    slots_[hole] = next;
    hole = j;
  }
  slots_[hole].a = kEmptySlot;
}

// Inserts a new block with one holder; the key must be absent. False, with nothing changed, when the table
// had to grow and could not.
bool PrefixIndex::InsertSlot(uint32_t lo, uint32_t hi, uint32_t w, uint32_t stamp) {
  if ((blocks_ + 1) * 4 > cap_ * 3 && cap_ < maxCap_) {
    if (!Grow()) return false;
  }
  uint64_t s = HomeOf(lo, hi);
  while (slots_[s].a != kEmptySlot) s = (s + 1) & mask_;
  slots_[s] = Slot{lo, hi, w, stamp};
  blocks_++;
  return true;
}

// Doubles the table and reinserts every block in old slot order.
bool PrefixIndex::Grow() {
  const uint64_t newCap = cap_ * 2;
  Slot* fresh = static_cast<Slot*>(AllocBig(newCap * sizeof(Slot)));
  if (fresh == nullptr) return false;
  for (uint64_t s = 0; s < newCap; s++) fresh[s].a = kEmptySlot;
  Slot* old = slots_;
  const uint64_t oldCap = cap_;
  slots_ = fresh;
  cap_ = newCap;
  mask_ = newCap - 1;
  shift_ -= 1;
  for (uint64_t i = 0; i < oldCap; i++) {
    if (old[i].a == kEmptySlot) continue;
    uint64_t s = HomeOf(old[i].lo, old[i].hi);
    while (slots_[s].a != kEmptySlot) s = (s + 1) & mask_;
    slots_[s] = old[i];
  }
  FreeBig(old);
  return true;
}

// ---------- eviction ----------

// Evicts one holder chosen by sampling (the index is not empty). The sixteen sample slots depend only on
// the generator, so all of them are drawn and prefetched first, then resolved to their occupied slots
// (and multi-holder chunks prefetched), then judged in draw order exactly as the spec does.
void PrefixIndex::EvictOne(uint32_t now) {
  uint64_t at[kSamples];
  for (int k = 0; k < kSamples; k++) {
    at[k] = NextRandom() & mask_;
    DYSTRO_PREFETCH(&slots_[at[k]]);
  }
  // A full index evicts once per new holder: start the next eviction's sample reads now (the generator's
  // next draws, computed on a copy of its state), so they arrive while this record and the next finish.
  // A draw on the last slot of its line scans into the next line when that slot is empty (~40% of the
  // time at 3/5 load), so that line comes too.
  uint32_t x = rng_;
  for (int k = 0; k < kSamples; k++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    PrefetchSlot(x & mask_, kSlotsPerLine - 1);
  }
  // Resolve each draw to the next occupied slot: first within the drawn line, so that the draws whose
  // scan goes on (rare) fetch their next lines together instead of one after another.
  bool pending = false;
  for (int k = 0; k < kSamples; k++) {
    uint64_t s = at[k];
    const uint64_t last = s | (kSlotsPerLine - 1);
    while (slots_[s].a == kEmptySlot && s != last) s++;
    if (slots_[s].a == kEmptySlot) {
      s = (s + 1) & mask_;
      DYSTRO_PREFETCH(&slots_[s]);
      pending = true;
    }
    at[k] = s;
  }
  if (pending) {
    for (int k = 0; k < kSamples; k++) {
      uint64_t s = at[k];
      while (slots_[s].a == kEmptySlot) s = (s + 1) & mask_;
      at[k] = s;
    }
  }
  for (int k = 0; k < kSamples; k++) {
    const uint32_t a = slots_[at[k]].a;
    if ((a & kOverflow) != 0) DYSTRO_PREFETCH(arena_ + static_cast<uint64_t>(a & ~kOverflow) * 2);
  }
  uint64_t bestSlot = 0;
  uint32_t bestIdx = 0;
  int bestClass = 3;
  int32_t bestAge = 0;
  for (int k = 0; k < kSamples; k++) {
    const uint64_t s = at[k];
    const uint32_t n = Count(s);
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t w = GetWord(s, i);
      const uint32_t st = GetStamp(s, i);
      // Class for eviction: 0 dead, 1 speculative, 2 precise.
      const int c = !IsLive(w, st, now) ? 0 : TierBits(w) == 0 ? 1 : 2;
      const int32_t ag = Age(now, st);
      if (c < bestClass || (c == bestClass && ag > bestAge)) {
        bestClass = c;
        bestAge = ag;
        bestSlot = s;
        bestIdx = i;
      }
    }
  }
  if (bestClass == 0) {
    deadRemoved_++;
  } else {
    evictions_++;
  }
  RemoveHolder(bestSlot, bestIdx);
}

inline void PrefixIndex::Reserve(uint32_t now) {
  while (entries_ >= options_.maxEntries && entries_ > 0) EvictOne(now);
}

// ---------- operations ----------

bool PrefixIndex::Store(uint32_t replica, uint32_t tier, uint32_t lo, uint32_t hi, uint32_t now) {
  const uint32_t bit = 1u << tier;
  int64_t s = Find(lo, hi);
  if (s >= 0) {
    const int64_t i = HolderOf(s, replica);
    if (i >= 0) {
      const uint32_t w = GetWord(s, i);
      const uint32_t st = GetStamp(s, i);
      if ((w & kSpecBit) != 0 && TierBits(w) == 0) speculative_--;
      if (!IsLive(w, st, now)) {
        deadRemoved_++;
        SetHolder(s, i, Word(replica, bit, false), now);
      } else {
        SetHolder(s, i, Word(replica, TierBits(w) | bit, false), now);
      }
      return true;
    }
  }
  Reserve(now);
  entries_++;
  s = Find(lo, hi);  // eviction may have moved or removed the block
  const bool ok = s < 0 ? InsertSlot(lo, hi, Word(replica, bit, false), now) : AppendHolder(s, Word(replica, bit, false), now);
  if (!ok) entries_--;
  return ok;
}

void PrefixIndex::Remove(uint32_t replica, uint32_t tier, uint32_t lo, uint32_t hi, uint32_t now) {
  const int64_t s = Find(lo, hi);
  if (s < 0) return;
  const int64_t i = HolderOf(s, replica);
  if (i < 0) return;
  const uint32_t w = GetWord(s, i);
  const uint32_t st = GetStamp(s, i);
  if (!IsLive(w, st, now)) {
    deadRemoved_++;
    RemoveHolder(s, i);
    return;
  }
  const uint32_t left = TierBits(w) & ~(1u << tier);
  if (left == 0) {
    RemoveHolder(s, i);
  } else {
    SetHolder(s, i, Word(replica, left, false), st);
  }
}

bool PrefixIndex::Speculate(uint32_t replica, uint32_t lo, uint32_t hi, uint32_t now) {
  const uint32_t expiry = now + options_.ttlMs;  // wraps mod 2^32 like the spec's >>> 0
  int64_t s = Find(lo, hi);
  if (s >= 0) {
    const int64_t i = HolderOf(s, replica);
    if (i >= 0) {
      const uint32_t w = GetWord(s, i);
      const uint32_t st = GetStamp(s, i);
      const bool live = IsLive(w, st, now);
      if (live && TierBits(w) != 0) {
        SetHolder(s, i, w, now);  // precise: a routing decision counts as a use (LRU)
      } else {
        if (!live) {
          deadRemoved_++;
          if ((w & kSpecBit) == 0 || TierBits(w) != 0) speculative_++;
        }
        SetHolder(s, i, Word(replica, 0, true), expiry);
      }
      return true;
    }
  }
  Reserve(now);
  entries_++;
  speculative_++;
  s = Find(lo, hi);
  const bool ok = s < 0 ? InsertSlot(lo, hi, Word(replica, 0, true), expiry) : AppendHolder(s, Word(replica, 0, true), expiry);
  if (!ok) {
    entries_--;
    speculative_--;
  }
  return ok;
}

void PrefixIndex::Clear(uint32_t replica) {
  epoch_[replica] = static_cast<uint8_t>((epoch_[replica] + 1) & kEpochMask);
  wipes_[replica]++;
  if (wipes_[replica] >= kWipesBeforeSweep) Sweep(replica);
}

// Removes every dead holder of one replica (whole-table pass, once per 127 wipes).
void PrefixIndex::Sweep(uint32_t replica) {
  sweeps_++;
  wipes_[replica] = 0;
  const uint32_t cur = epoch_[replica];
  uint64_t s = 0;
  while (s < cap_) {
    if (slots_[s].a == kEmptySlot) {
      s++;
      continue;
    }
    bool removed = false;
    const uint32_t n = Count(s);
    for (int64_t i = static_cast<int64_t>(n) - 1; i >= 0; i--) {
      const uint32_t w = GetWord(s, static_cast<uint32_t>(i));
      if ((w & kReplicaMask) == replica && ((w >> kEpochShift) & kEpochMask) != cur) {
        deadRemoved_++;
        const bool wasLast = Count(s) == 1;
        RemoveHolder(s, static_cast<uint32_t>(i));
        if (wasLast) {
          removed = true;
          break;
        }
      }
    }
    // A backward shift may have moved a later block into s: look at s again.
    if (!removed) s++;
  }
}

int64_t PrefixIndex::Apply(const uint32_t* records, size_t recordsLen, size_t count, uint32_t now) {
  if (count > recordsLen / kIndexRecordWords) return kBadArg;
  const size_t warm = count < kApplyAhead ? count : kApplyAhead;
  for (size_t k = 0; k < warm; k++) {
    const uint32_t* ahead = records + k * kIndexRecordWords;
    PrefetchHome(ahead[2] | static_cast<uint64_t>(ahead[3]) << 32, 0);
  }
  for (size_t k = 0; k < count; k++) {
    if (k + kApplyAhead < count) {
      const uint32_t* ahead = records + (k + kApplyAhead) * kIndexRecordWords;
      PrefetchHome(ahead[2] | static_cast<uint64_t>(ahead[3]) << 32, 0);
    }
    const uint32_t* rec = records + k * kIndexRecordWords;
    const uint32_t op = rec[0] & 0xFF;
    const uint32_t tier = (rec[0] >> 8) & 0xFF;
    const uint32_t replica = rec[1];
    const uint32_t lo = rec[2];
    const uint32_t hi = rec[3];
    if (replica >= options_.replicaCapacity || tier > kIndexMaxTier) return kBadArg;
    if (op == kIndexOpStore) {
      if (!Store(replica, tier, lo, hi, now)) return kNoMemory;
    } else if (op == kIndexOpRemove) {
      Remove(replica, tier, lo, hi, now);
    } else if (op == kIndexOpClear) {
      Clear(replica);
    } else if (op == kIndexOpSpeculate) {
      if (!Speculate(replica, lo, hi, now)) return kNoMemory;
    } else {
      return kBadArg;
    }
  }
  return static_cast<int64_t>(count);
}

// ---------- match ----------

namespace {

constexpr uint64_t kTierMask64 = uint64_t{7} << kTierShift;  // a pair's word is its low half

// Whether holders q[0, n) have the same words as p[0, n), in the same order, each with a tier bit (so
// its liveness depends on its word and the epochs alone, never on its stamp: see IsLive). Stamps are
// not compared. Reads pairs as u64 (the word is the low half on every little-endian host; on a
// big-endian one the check is still exact, just as strict on the stamps), 8 at a time, so the loop
// vectorizes and stops at the first differing group.
inline bool SameCleanWords(const uint32_t* p, const uint32_t* q, uint32_t n) {
  if (p[0] != q[0]) return false;
  constexpr uint64_t kWord = 0xFFFFFFFFu;
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t diff = 0;
    uint64_t untiered = 0;
    for (uint32_t k = 0; k < 8; k++) {
      uint64_t a;
      uint64_t b;
      std::memcpy(&a, p + 2 * (i + k), 8);
      std::memcpy(&b, q + 2 * (i + k), 8);
      diff |= (a ^ b) & kWord;
      untiered |= (b & kTierMask64) == 0 ? 1 : 0;
    }
    if ((diff | untiered) != 0) return false;
  }
  for (; i < n; i++) {
    if (p[2 * i] != q[2 * i] || TierBits(q[2 * i]) == 0) return false;
  }
  return true;
}

}  // namespace

// Looks a key up within its home slot's cache line only (match pipeline, stage 2): the slot, −1 when an
// empty slot proves it absent, or kUnresolved when the probe run goes on past the line; the next
// kRunLines lines are then prefetched so that the full Find in stage 3 finds them cached.
inline int64_t PrefixIndex::ProbeLine(uint32_t lo, uint32_t hi) const {
  uint64_t s = HomeOf(lo, hi);
  const uint64_t last = s | (kSlotsPerLine - 1);
  for (;;) {
    const Slot& slot = slots_[s];
    if (slot.a == kEmptySlot) return -1;
    if (slot.lo == lo && slot.hi == hi) return static_cast<int64_t>(s);
    if (s == last) {
      for (uint64_t l = 1; l <= kRunLines; l++) DYSTRO_PREFETCH(&slots_[(last + 1 + (l - 1) * kSlotsPerLine) & mask_]);
      return kUnresolved;
    }
    s++;
  }
}

int64_t PrefixIndex::Match(const uint64_t* hashes, size_t count, uint32_t now, uint32_t* out, size_t outLen) {
  if (count == 0) return 0;
  // Block 0 decides whether there is anything to walk. Its line (and the next: a key that is absent is
  // only proven so at the end of its probe run) is read together with the home lines of the next few
  // blocks, so a hit does not wait a whole miss before the pipeline starts; the rest of the window is
  // prefetched only once block 0 is found, so that a miss, the common case for a new prompt, costs
  // about one memory access and does not spend bandwidth on lines it will never read.
  PrefetchHome(hashes[0], 0);
  const size_t early = count < kEarlyAhead ? count : kEarlyAhead;
  for (size_t b = 1; b < early; b++) PrefetchHome(hashes[b], kSlotsPerLine);
  const int64_t s0 = Find(static_cast<uint32_t>(hashes[0]), static_cast<uint32_t>(hashes[0] >> 32));
  if (s0 < 0) return 0;
  const size_t warm = count < kPrefetchAhead ? count : kPrefetchAhead;
  for (size_t b = early; b < warm; b++) PrefetchHome(hashes[b], kSlotsPerLine);

  uint32_t g = ++matchGen_;
  if (g == 0) {
    for (uint32_t r = 0; r < options_.replicaCapacity; r++) scratch_[r].gen = 0;
    matchGen_ = g = 1;
  }

  // The pipeline (see kPrefetchAhead): stage 1 prefetches block b + kPrefetchAhead's home line; stage 2
  // probes block b + kFindAhead within that line, keeping the result in `ring` and prefetching what the
  // block needs next (the holders' arena chunk, or the lines a long probe run continues into); stage 3
  // judges block b. Stages 1 and 2 only read, so running them past the block where the walk stops
  // changes nothing.
  int64_t ring[kRing];
  // A replica's (gen, depth) as one integer: one compare asks whether it is still walking, at block b.
  const auto key = [](const Scratch& sc) { return static_cast<uint64_t>(sc.gen) << 32 | sc.depth; };
  const uint32_t* const arena = arena_;
  const Slot* const slots = slots_;
  const auto stage2 = [&](size_t b) {
    const int64_t s = ProbeLine(static_cast<uint32_t>(hashes[b]), static_cast<uint32_t>(hashes[b] >> 32));
    ring[b & (kRing - 1)] = s;
    if (s >= 0 && (slots[s].a & kOverflow) != 0) DYSTRO_PREFETCH(arena + static_cast<uint64_t>(slots[s].a & ~kOverflow) * 2);
  };
  const size_t first = count < kFindAhead + 1 ? count : kFindAhead + 1;
  for (size_t b = 1; b < first; b++) stage2(b);

  // Block 0: every live holder starts with depth 1, in holder order.
  size_t found = 0;
  {
    const Slot& slot = slots[s0];
    const bool inlined = (slot.a & kOverflow) == 0;
    const uint32_t n = inlined ? 1 : slot.b & kCountMask;
    const uint32_t* pairs = inlined ? nullptr : arena + static_cast<uint64_t>(slot.a & ~kOverflow) * 2;
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t w = inlined ? slot.a : pairs[2 * i];
      const uint32_t st = inlined ? slot.b : pairs[2 * i + 1];
      if (!IsLive(w, st, now)) continue;
      const uint32_t r = w & kReplicaMask;
      if ((found + 1) * kIndexMatchStride > outLen) return kOutTooSmall;
      out[found * kIndexMatchStride] = r;
      found++;
      Scratch& sc = scratch_[r];
      sc.gen = g;
      sc.depth = 1;
      sc.tiers[0] = 0;
      sc.tiers[1] = 0;
      sc.tiers[2] = 0;
      sc.tiers[kBestTier[TierBits(w)]]++;
    }
  }

  // Blocks 1 …: a replica advances only if it held every block before; stop when nobody advances.
  //
  // Runs of identical holder lists (a prefix the fleet stored block by block: every block's holders in
  // the same order, same tiers and epochs): when block b's holder words equal those of the last block
  // walked one by one (`ref`), all with a tier bit, each holder is live at b exactly when it was at ref
  // (liveness reads the word and the epochs only), so the replicas advancing at b are those that
  // advanced at ref, each counting the same tier, and `active` stays. Such blocks are only counted
  // (`run`); before the next block walked one by one (whose candidates must have their true depth) and
  // at the end, one pass over ref's holders adds `run` to the depth and tier of each replica that
  // advanced at ref — the one whose (gen, depth) is (g, ref + 1) and whose word is live, the test the
  // block-by-block walk would make at each block of the run.
  const uint32_t* refPairs = nullptr;
  uint32_t refN = 0;
  size_t refBlock = 0;
  size_t run = 0;
  {
    const Slot& slot = slots[s0];
    const bool inlined = (slot.a & kOverflow) == 0;
    refPairs = inlined ? &slot.a : arena + static_cast<uint64_t>(slot.a & ~kOverflow) * 2;
    refN = inlined ? 1 : slot.b & kCountMask;
  }
  size_t active = found;
  const auto flush = [&]() {
    const uint64_t want = static_cast<uint64_t>(g) << 32 | static_cast<uint32_t>(refBlock + 1);
    const uint32_t depth = static_cast<uint32_t>(refBlock + 1 + run);
    const uint32_t add = static_cast<uint32_t>(run);
    size_t done = 0;
    for (uint32_t i = 0; i < refN && done < active; i++) {
      const uint32_t w = refPairs[2 * i];
      Scratch& sc = scratch_[w & kReplicaMask];
      if (key(sc) != want || !IsLive(w, refPairs[2 * i + 1], now)) continue;
      sc.depth = depth;
      sc.tiers[kBestTier[TierBits(w)]] += add;
      done++;
    }
    run = 0;
  };
  for (size_t b = 1; b < count && active > 0; b++) {
    if (b + kPrefetchAhead < count) PrefetchHome(hashes[b + kPrefetchAhead], kSlotsPerLine);
    if (b + kFindAhead < count) stage2(b + kFindAhead);
    int64_t s = ring[b & (kRing - 1)];
    if (s == kUnresolved) s = Find(static_cast<uint32_t>(hashes[b]), static_cast<uint32_t>(hashes[b] >> 32));
    if (s < 0) break;
    const Slot& slot = slots[s];
    {
      const bool inlined = (slot.a & kOverflow) == 0;
      const uint32_t n = inlined ? 1 : slot.b & kCountMask;
      const uint32_t* pairs = inlined ? &slot.a : arena + static_cast<uint64_t>(slot.a & ~kOverflow) * 2;
      if (n == refN && SameCleanWords(refPairs, pairs, n)) {
        run++;  // as ref: the same replicas advance, with the same tiers
        continue;
      }
      if (run > 0) flush();
      refPairs = pairs;
      refN = n;
      refBlock = b;
    }
    // The candidates are the `walking` replicas that reached depth b; each holds a block at most once, so
    // the scan of the holders can stop as soon as all of them have advanced.
    const size_t walking = active;
    active = 0;
    const uint64_t want = static_cast<uint64_t>(g) << 32 | static_cast<uint32_t>(b);  // (gen, depth) of a candidate
    if ((slot.a & kOverflow) == 0) {
      const uint32_t w = slot.a;
      Scratch& sc = scratch_[w & kReplicaMask];
      if (key(sc) == want && IsLive(w, slot.b, now)) {
        sc.depth = static_cast<uint32_t>(b + 1);
        sc.tiers[kBestTier[TierBits(w)]]++;
        active = 1;
      }
      continue;
    }
    const uint32_t n = slot.b & kCountMask;
    const uint32_t* pairs = arena + static_cast<uint64_t>(slot.a & ~kOverflow) * 2;
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t w = pairs[2 * i];
      Scratch& sc = scratch_[w & kReplicaMask];
      if (key(sc) != want || !IsLive(w, pairs[2 * i + 1], now)) continue;
      sc.depth = static_cast<uint32_t>(b + 1);
      sc.tiers[kBestTier[TierBits(w)]]++;
      if (++active == walking) break;
    }
  }
  if (run > 0) flush();

  for (size_t k = 0; k < found; k++) {
    uint32_t* o = out + k * kIndexMatchStride;
    const Scratch& sc = scratch_[o[0]];
    o[1] = sc.depth;
    o[2] = sc.tiers[0];
    o[3] = sc.tiers[1];
    o[4] = sc.tiers[2];
  }
  return static_cast<int64_t>(found);
}

// ---------- stats and dump ----------

void PrefixIndex::Stats(double* out, size_t outLen) const {
  const double v[kIndexStatsLength] = {
      static_cast<double>(entries_),
      static_cast<double>(blocks_),
      static_cast<double>(cap_),
      static_cast<double>(arenaTop_),
      // The spec's accounting: table 16 B a slot, arena 4 B a word, per replica epoch + wipes (2 B),
      // depth + gen (8 B) and three tier counts (12 B). The same figure on every backend.
      static_cast<double>(cap_ * 16 + arenaWords_ * 4 + static_cast<uint64_t>(options_.replicaCapacity) * (2 + 4 + 4 + 12)),
      static_cast<double>(evictions_),
      static_cast<double>(deadRemoved_),
      static_cast<double>(sweeps_),
      static_cast<double>(speculative_),
  };
  const size_t n = outLen < kIndexStatsLength ? outLen : kIndexStatsLength;
  for (size_t k = 0; k < n; k++) out[k] = v[k];
}

size_t PrefixIndex::CountLive(uint32_t now) const {
  size_t live = 0;
  for (uint64_t s = 0; s < cap_; s++) {
    if (slots_[s].a == kEmptySlot) continue;
    const uint32_t n = Count(s);
    for (uint32_t i = 0; i < n; i++) {
      if (IsLive(GetWord(s, i), GetStamp(s, i), now)) live++;
    }
  }
  return live;
}

size_t PrefixIndex::Dump(uint32_t now, uint32_t* out, size_t outLen) const {
  size_t at = 0;
  for (uint64_t s = 0; s < cap_; s++) {
    if (slots_[s].a == kEmptySlot) continue;
    const uint32_t n = Count(s);
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t w = GetWord(s, i);
      if (!IsLive(w, GetStamp(s, i), now)) continue;
      if (at + kIndexDumpWords > outLen) return at;
      const uint32_t t = TierBits(w);
      out[at] = slots_[s].lo;
      out[at + 1] = slots_[s].hi;
      out[at + 2] = w & kReplicaMask;
      out[at + 3] = t | ((w & kSpecBit) != 0 && t == 0 ? 8u : 0u);
      at += kIndexDumpWords;
    }
  }
  return at;
}

}  // namespace dystro
