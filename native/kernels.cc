// Plain C++ kernels of the dystro ABI. See kernels.h and src/kernels/abi.ts (normative).
//
// Floating point: binding.gyp compiles with -ffp-contract=off and without -ffast-math, and every
// expression below is written in the operation order abi.ts prescribes, so a fused multiply-add or a
// reassociation can never make these results differ from the JS reference or the wasm module.
#include "kernels.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace dystro {
namespace {

// ---- XXH64 (Yann Collet, "xxHash" specification, 64-bit variant) --------------------------------

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ULL;

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define DYSTRO_BIG_ENDIAN 1
#endif

inline uint64_t Rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Lanes are little-endian whatever the host (XXH64 is defined on LE reads). memcpy compiles to one
// unaligned load; typed-array data has no alignment guarantee once a byteOffset is involved.
inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
#ifdef DYSTRO_BIG_ENDIAN
  v = __builtin_bswap64(v);
#endif
  return v;
}

inline uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
#ifdef DYSTRO_BIG_ENDIAN
  v = __builtin_bswap32(v);
#endif
  return v;
}

inline uint64_t Round(uint64_t acc, uint64_t lane) {
  acc += lane * kP2;
  acc = Rotl64(acc, 31);
  return acc * kP1;
}

inline uint64_t MergeRound(uint64_t acc, uint64_t v) {
  acc ^= Round(0, v);
  return acc * kP1 + kP4;
}

// Inlined into the chain loops: a block's hash is one serial chain of 64-bit multiplies seeded by the
// previous block's hash, so call overhead and redundant branches are what is left to remove.
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline uint64_t Xxh64Inline(const uint8_t* p, size_t len, uint64_t seed) {
  const uint8_t* const end = p + len;
  uint64_t h;
  if (len >= 32) {
    uint64_t v1 = seed + kP1 + kP2;
    uint64_t v2 = seed + kP2;
    uint64_t v3 = seed;
    uint64_t v4 = seed - kP1;
    const uint8_t* const limit = end - 32;
    do {
      v1 = Round(v1, Load64(p));
      v2 = Round(v2, Load64(p + 8));
      v3 = Round(v3, Load64(p + 16));
      v4 = Round(v4, Load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = Rotl64(v1, 1) + Rotl64(v2, 7) + Rotl64(v3, 12) + Rotl64(v4, 18);
    h = MergeRound(h, v1);
    h = MergeRound(h, v2);
    h = MergeRound(h, v3);
    h = MergeRound(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(len);
  while (end - p >= 8) {
    h ^= Round(0, Load64(p));
    h = Rotl64(h, 27) * kP1 + kP4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= static_cast<uint64_t>(Load32(p)) * kP1;
    h = Rotl64(h, 23) * kP2 + kP3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * kP5;
    h = Rotl64(h, 11) * kP1;
    p += 1;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

// Chains XXH64 over `blocks` consecutive blocks of `blockBytes` bytes: h[b] = XXH64(block b, h[b−1]).
void ChainBytes(const uint8_t* p, size_t blockBytes, size_t blocks, uint64_t seed, uint64_t* out) {
  uint64_t h = seed;
  for (size_t b = 0; b < blocks; ++b) {
    h = Xxh64Inline(p, blockBytes, h);
    out[b] = h;
    p += blockBytes;
  }
}

// Token mode: the hashed bytes are the tokens in little-endian order. On a little-endian host that is
// the typed array's own memory, hashed in place; a big-endian host swaps one block at a time into a
// scratch buffer (4 · 1024 bytes at most).
void ChainTokens(const uint32_t* tokens, uint32_t blockSize, size_t blocks, uint64_t seed, uint64_t* out) {
#ifndef DYSTRO_BIG_ENDIAN
  ChainBytes(reinterpret_cast<const uint8_t*>(tokens), static_cast<size_t>(blockSize) * 4, blocks, seed, out);
#else
  uint32_t scratch[kMaxBlockSize];
  uint64_t h = seed;
  for (size_t b = 0; b < blocks; ++b) {
    for (uint32_t t = 0; t < blockSize; ++t) scratch[t] = __builtin_bswap32(tokens[b * blockSize + t]);
    h = Xxh64Inline(reinterpret_cast<const uint8_t*>(scratch), static_cast<size_t>(blockSize) * 4, h);
    out[b] = h;
  }
#endif
}

inline bool ValidBlockSize(uint32_t blockSize) { return blockSize >= kMinBlockSize && blockSize <= kMaxBlockSize; }

// ---- ring ------------------------------------------------------------------------------------------

// First i with points[lo ≤ i < hi] ≥ h, or hi (a plain lower-bound binary search).
inline size_t LowerBound(const uint32_t* points, size_t lo, size_t hi, uint32_t h) {
  while (lo < hi) {
    const size_t mid = lo + ((hi - lo) >> 1);
    if (points[mid] < h) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// The lookup's point index for position h: the radix index narrows the search to the points sharing h's
// top `bits` bits (index[p] … index[p+1]); the answer is then checked against its neighbours, and a
// malformed index (a host bug) costs a full search instead of a wrong answer or a read out of bounds.
// Requires n > 0 and a shape that passed CheckRing. Returns a point index in [0, n) (wrapped).
inline size_t RingSlot(const Ring& ring, uint32_t h) {
  const size_t n = ring.n;
  const uint32_t p = h >> (32 - ring.bits);
  size_t lo = ring.index[p];
  size_t hi = ring.index[p + 1];
  if (lo > hi || hi > n) {
    lo = 0;
    hi = n;
  }
  size_t i = LowerBound(ring.points, lo, hi, h);
  if ((i < n && ring.points[i] < h) || (i > 0 && ring.points[i - 1] >= h)) {
    i = LowerBound(ring.points, 0, n, h);
  }
  return i == n ? 0 : i;
}

// ---- bounded loads -----------------------------------------------------------------------------------

// Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with Bounded Loads" (SODA 2018): a key walks
// from its home slot until a node is under its ceiling ceil(c · m · share), m = keys placed so far + 1.
// `home(key)` gives the starting slot, `slotNode(s)` the node at slot s (0 ≤ s < slotCount). A node id
// outside [0, nodeCount) never qualifies (a malformed table cannot make us index loads out of bounds).
template <typename Home, typename SlotNode>
int64_t AssignBounded(const uint64_t* keys, size_t count, Home home, SlotNode slotNode, size_t slotCount,
                      uint32_t* loads, const double* shares, size_t nodeCount, double c, int32_t* out) {
  double total = 0;  // keys currently placed; a double as in abi.ts (exact below 2^53)
  for (size_t j = 0; j < nodeCount; ++j) total += static_cast<double>(loads[j]);
  int64_t refused = 0;
  for (size_t k = 0; k < count; ++k) {
    const double m = total + 1;
    const double cm = c * m;  // abi.ts: ceil((c · m) · shares[j]), in that order
    int32_t chosen = kNoNode;
    if (slotCount > 0) {
      size_t s = home(keys[k]);
      for (size_t step = 0; step < slotCount; ++step) {
        const int32_t j = slotNode(s);
        if (j >= 0 && static_cast<size_t>(j) < nodeCount &&
            static_cast<double>(loads[j]) + 1 <= std::ceil(cm * shares[j])) {
          chosen = j;
          break;
        }
        if (++s == slotCount) s = 0;
      }
    }
    out[k] = chosen;
    if (chosen == kNoNode) {
      ++refused;
    } else {
      loads[chosen] += 1;
      total += 1;
    }
  }
  return refused;
}

int32_t CheckBounded(size_t nodeCount, size_t count, size_t loadsLen, size_t sharesLen, double c, size_t outLen) {
  if (loadsLen != nodeCount || sharesLen != nodeCount) return kBadArg;
  if (!std::isfinite(c) || !(c > 1)) return kBadArg;
  if (outLen < count) return kOutTooSmall;
  return kOk;
}

// ---- rendezvous ----------------------------------------------------------------------------------

// C[k] = 1 / (2k + 1): the series ln(m) = 2·atanh(s) = 2·(s + s³/3 + s⁵/5 + …), s = (m − 1)/(m + 1).
// Constant-folded by the compiler with correctly rounded division, as abi.ts requires.
constexpr double kLnC[12] = {1.0 / 1,  1.0 / 3,  1.0 / 5,  1.0 / 7,  1.0 / 9,  1.0 / 11,
                             1.0 / 13, 1.0 / 15, 1.0 / 17, 1.0 / 19, 1.0 / 21, 1.0 / 23};

inline double RendezvousScore(uint64_t key, uint64_t nodeHash, double weight) {
  const uint64_t x = Mix64(key ^ nodeHash);
  const uint64_t k = x >> 12;                                 // 52 bits
  const double u = static_cast<double>(2 * k + 1) * 0x1p-53;  // exact: 2k + 1 < 2^53; 0 < u < 1
  // Schindelhauer & Schomaker's logarithmic weighting: w / −ln(u) orders nodes as in weighted HRW.
  return weight / (0.0 - LnPortable(u));
}

}  // namespace

// ---- hashing -------------------------------------------------------------------------------------

uint64_t Xxh64(const uint8_t* data, size_t len, uint64_t seed) { return Xxh64Inline(data, len, seed); }

int64_t HashTokens(const uint32_t* tokens, size_t tokenCount, uint32_t blockSize, uint64_t seed, uint64_t* out,
                   size_t outLen) {
  if (!ValidBlockSize(blockSize)) return kBlockSize;
  const size_t blocks = tokenCount / blockSize;
  if (outLen < blocks) return kOutTooSmall;
  ChainTokens(tokens, blockSize, blocks, seed, out);
  return static_cast<int64_t>(blocks);
}

int64_t HashBytes(const uint8_t* bytes, size_t byteCount, uint32_t blockSize, uint64_t seed, uint64_t* out,
                  size_t outLen) {
  if (!ValidBlockSize(blockSize)) return kBlockSize;
  const size_t blocks = byteCount / blockSize;
  if (outLen < blocks) return kOutTooSmall;
  ChainBytes(bytes, blockSize, blocks, seed, out);
  return static_cast<int64_t>(blocks);
}

int64_t HashTokensBatch(const uint32_t* tokens, size_t tokenCount, const uint32_t* offsets, size_t offsetCount,
                        const uint64_t* seeds, size_t seedCount, uint32_t blockSize, uint64_t* out, size_t outLen,
                        uint32_t* outOffsets, size_t outOffsetCount) {
  if (!ValidBlockSize(blockSize)) return kBlockSize;
  if (offsetCount != seedCount + 1 || outOffsetCount != seedCount + 1) return kBadArg;
  for (size_t i = 0; i < seedCount; ++i) {
    if (offsets[i] > offsets[i + 1]) return kBadArg;
  }
  if (offsets[seedCount] > tokenCount) return kBadArg;
  // Prompts are disjoint ranges of `tokens` (offsets never decrease), so the total block count is at
  // most tokenCount / blockSize and every running sum fits the u32 outOffsets.
  size_t total = 0;
  outOffsets[0] = 0;
  for (size_t i = 0; i < seedCount; ++i) {
    total += (offsets[i + 1] - offsets[i]) / blockSize;
    outOffsets[i + 1] = static_cast<uint32_t>(total);
  }
  if (outLen < total) return kOutTooSmall;
  for (size_t i = 0; i < seedCount; ++i) {
    const size_t blocks = (offsets[i + 1] - offsets[i]) / blockSize;
    ChainTokens(tokens + offsets[i], blockSize, blocks, seeds[i], out + outOffsets[i]);
  }
  return static_cast<int64_t>(total);
}

// ---- jump ----------------------------------------------------------------------------------------

// Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014), reference C++ code,
// with j kept as a double so the comparison with a (possibly non-integer) `buckets` is the JS one.
int32_t Jump(uint64_t key, double buckets) {
  if (!(buckets >= 1)) return kEmpty;
  if (buckets > static_cast<double>(kMaxJumpBuckets)) return kBadArg;
  int64_t b = -1;
  double j = 0;
  while (j < buckets) {
    b = static_cast<int64_t>(j);
    key = key * 2862933555777941757ULL + 1;
    // (key >> 33) + 1 ≤ 2^31 and the product ≤ 2^62 are non-negative and fit an int64, so the signed
    // conversions (one instruction each) and truncation give exactly floor(); std::floor without SSE4.1
    // and the unsigned u64→double path cost a library call and a branch every step.
    const double x = static_cast<double>(static_cast<int64_t>((key >> 33) + 1));
    j = static_cast<double>(static_cast<int64_t>(static_cast<double>(b + 1) * (2147483648.0 / x)));
  }
  return static_cast<int32_t>(b);
}

int64_t JumpBatch(const uint64_t* keys, size_t count, double buckets, int32_t* out, size_t outLen) {
  if (!(buckets >= 1)) return kEmpty;
  if (buckets > static_cast<double>(kMaxJumpBuckets)) return kBadArg;
  if (outLen < count) return kOutTooSmall;
  for (size_t i = 0; i < count; ++i) out[i] = Jump(keys[i], buckets);
  return static_cast<int64_t>(count);
}

// ---- ring ----------------------------------------------------------------------------------------

int32_t CheckRing(const Ring& ring) {
  if (ring.nodesLen != ring.n) return kBadArg;
  if (ring.bits < kMinRingIndexBits || ring.bits > kMaxRingIndexBits) return kBadArg;
  if (ring.indexLen != (static_cast<size_t>(1) << ring.bits) + 1) return kBadArg;
  return kOk;
}

int32_t RingLookup(const Ring& ring, uint64_t key) {
  if (ring.n == 0) return kNoNode;
  const int32_t shape = CheckRing(ring);
  if (shape != kOk) return shape;
  return ring.nodes[RingSlot(ring, static_cast<uint32_t>(key))];
}

int64_t RingLookupBatch(const Ring& ring, const uint64_t* keys, size_t count, int32_t* out, size_t outLen) {
  if (outLen < count) return kOutTooSmall;
  if (ring.n == 0) {
    for (size_t i = 0; i < count; ++i) out[i] = kNoNode;
    return static_cast<int64_t>(count);
  }
  const int32_t shape = CheckRing(ring);
  if (shape != kOk) return shape;
  for (size_t i = 0; i < count; ++i) out[i] = ring.nodes[RingSlot(ring, static_cast<uint32_t>(keys[i]))];
  return static_cast<int64_t>(count);
}

int64_t RingAssignBounded(const Ring& ring, size_t nodeCount, const uint64_t* keys, size_t count, uint32_t* loads,
                          size_t loadsLen, const double* shares, size_t sharesLen, double c, int32_t* out,
                          size_t outLen) {
  const int32_t bad = CheckBounded(nodeCount, count, loadsLen, sharesLen, c, outLen);
  if (bad != kOk) return bad;
  if (ring.n > 0) {
    const int32_t shape = CheckRing(ring);
    if (shape != kOk) return shape;
  }
  return AssignBounded(
      keys, count, [&ring](uint64_t key) { return RingSlot(ring, static_cast<uint32_t>(key)); },
      [&ring](size_t s) { return ring.nodes[s]; }, ring.n, loads, shares, nodeCount, c, out);
}

// ---- Maglev --------------------------------------------------------------------------------------

int64_t MaglevBuild(const uint32_t* offsets, const uint32_t* skips, const uint32_t* weights, size_t n, double size,
                    int32_t* table, size_t tableLen) {
  if (n == 0) return kBadArg;
  if (!(size >= static_cast<double>(n)) || !(size <= static_cast<double>(kMaxMaglevSize)) ||
      std::floor(size) != size) {
    return kBadArg;
  }
  const uint32_t m = static_cast<uint32_t>(size);  // M, the table size in entries
  uint32_t wmax = 0;
  for (size_t i = 0; i < n; ++i) {
    if (offsets[i] >= m || skips[i] < 1 || skips[i] >= m || weights[i] < 1) return kBadArg;
    if (weights[i] > wmax) wmax = weights[i];
  }
  if (tableLen < m) return kOutTooSmall;

  // Scratch on the C heap, not std::vector: the addon is built without C++ exceptions, and a failed
  // allocation must come back as NO_MEMORY rather than abort the process.
  uint32_t* pos = static_cast<uint32_t*>(std::malloc(n * sizeof(uint32_t)));
  uint64_t* credit = static_cast<uint64_t*>(std::calloc(n, sizeof(uint64_t)));
  if (pos == nullptr || credit == nullptr) {
    std::free(pos);
    std::free(credit);
    return kNoMemory;
  }
  for (size_t i = 0; i < n; ++i) pos[i] = offsets[i];
  for (uint32_t s = 0; s < m; ++s) table[s] = -1;

  // Eisenbud et al. 2016, §3.4 Pseudocode 1: nodes take turns claiming the next empty slot of their
  // permutation offset, offset + skip, offset + 2·skip, … (mod M). Weighted turns: node i banks weight[i]
  // credits a round and takes a turn per wmax banked, so the heaviest node claims a slot every round and
  // the loop always progresses. credit[i] < wmax between rounds, so credit + weight < 2^33 fits a u64.
  int64_t status = static_cast<int64_t>(m);
  uint32_t filled = 0;
  while (filled < m && status > 0) {
    for (size_t i = 0; i < n; ++i) {
      credit[i] += weights[i];
      if (credit[i] < wmax) continue;
      credit[i] -= wmax;
      const uint32_t skip = skips[i];
      uint32_t p = pos[i];
      // For prime M the sequence visits every slot, so an empty one turns up within M − 1 steps; the
      // step bound only stops the endless loop a non-prime M (gcd(skip, M) > 1) could cause.
      uint32_t steps = 0;
      while (table[p] >= 0) {
        p += skip;  // p, skip < M ≤ 2^26: no overflow; one subtraction is the modulo
        if (p >= m) p -= m;
        if (++steps >= m) break;
      }
      if (table[p] >= 0) {
        status = kBadArg;
        break;
      }
      table[p] = static_cast<int32_t>(i);
      p += skip;
      if (p >= m) p -= m;
      pos[i] = p;
      if (++filled == m) break;
    }
  }
  std::free(pos);
  std::free(credit);
  return status;
}

int32_t MaglevLookup(const int32_t* table, size_t size, uint64_t key) {
  if (size == 0) return kNoNode;
  return table[key % size];
}

int64_t MaglevLookupBatch(const int32_t* table, size_t size, const uint64_t* keys, size_t count, int32_t* out,
                          size_t outLen) {
  if (outLen < count) return kOutTooSmall;
  for (size_t i = 0; i < count; ++i) out[i] = size == 0 ? kNoNode : table[keys[i] % size];
  return static_cast<int64_t>(count);
}

int64_t MaglevAssignBounded(const int32_t* table, size_t size, size_t nodeCount, const uint64_t* keys, size_t count,
                            uint32_t* loads, size_t loadsLen, const double* shares, size_t sharesLen, double c,
                            int32_t* out, size_t outLen) {
  const int32_t bad = CheckBounded(nodeCount, count, loadsLen, sharesLen, c, outLen);
  if (bad != kOk) return bad;
  return AssignBounded(
      keys, count, [size](uint64_t key) { return static_cast<size_t>(key % size); },
      [table](size_t s) { return table[s]; }, size, loads, shares, nodeCount, c, out);
}

// ---- rendezvous ----------------------------------------------------------------------------------

uint64_t Mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

double LnPortable(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  int32_t e = static_cast<int32_t>((bits >> 52) & 0x7FF) - 1023;
  const uint64_t mantissaBits = (bits & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL;  // exponent → 1023
  double m;
  std::memcpy(&m, &mantissaBits, sizeof m);
  // Centre m on 1 (m in [√2/2, √2]) so |s| ≤ 0.172 and twelve series terms reach full precision.
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    e = e + 1;
  }
  const double s = (m - 1) / (m + 1);
  const double z = s * s;
  double p = kLnC[11];
  for (int k = 10; k >= 0; --k) p = p * z + kLnC[k];
  return static_cast<double>(e) * 0.6931471805599453 + 2 * s * p;
}

int32_t RendezvousLookup(const uint64_t* nodeHashes, const double* weights, size_t n, uint64_t key) {
  int32_t best = kNoNode;
  double bestScore = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    const double score = RendezvousScore(key, nodeHashes[i], weights[i]);
    if (score > bestScore) {  // strict: ties keep the lowest index
      bestScore = score;
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

int64_t RendezvousLookupBatch(const uint64_t* nodeHashes, const double* weights, size_t n, const uint64_t* keys,
                              size_t count, int32_t* out, size_t outLen) {
  if (outLen < count) return kOutTooSmall;
  for (size_t i = 0; i < count; ++i) out[i] = RendezvousLookup(nodeHashes, weights, n, keys[i]);
  return static_cast<int64_t>(count);
}

}  // namespace dystro
