// Plain C++ kernels of the dystro ABI (src/kernels/abi.ts is the normative text; read it first).
//
// Nothing here knows about N-API: every function takes raw pointers and element counts and returns a
// status or a count, so the kernels can be tested, fuzzed or reused without Node. addon.cc decodes the
// JS arguments and calls these. Every function is memory-safe for any pointer/length pair it is given
// (it reads and writes only within the stated lengths) and terminates on any input.
#ifndef DYSTRO_NATIVE_KERNELS_H_
#define DYSTRO_NATIVE_KERNELS_H_

#include <cstddef>
#include <cstdint>

namespace dystro {

// Mirrors ABI_VERSION in src/kernels/abi.ts; bumped together with it.
constexpr int32_t kAbiVersion = 2;

// Mirrors `Status` in src/kernels/abi.ts (and assembly/status.ts).
enum Status : int32_t {
  kOk = 0,
  kBlockSize = -1,
  kOutTooSmall = -2,
  kEmpty = -3,
  kBadArg = -4,
  kNoMemory = -5,
};

// Written to lookup outputs when no node qualifies (NO_NODE in abi.ts).
constexpr int32_t kNoNode = -1;

constexpr uint32_t kMinBlockSize = 1;        // tokens (token mode) or bytes (byte mode) per block
constexpr uint32_t kMaxBlockSize = 1024;
constexpr uint32_t kMaxMaglevSize = 1u << 26;  // entries
constexpr uint32_t kMaxRingIndexBits = 24;
constexpr uint32_t kMinRingIndexBits = 1;
constexpr int64_t kMaxJumpBuckets = 2147483647;  // 2^31 − 1, the reference C++'s int32 range

// ---- hashing -------------------------------------------------------------------------------------

// The standard XXH64 of data[0, len) with a 64-bit seed (little-endian lanes on every host).
uint64_t Xxh64(const uint8_t* data, size_t len, uint64_t seed);

// Prefix-chained block hashes over u32 tokens: block b is tokens [b·B, (b+1)·B) as 4·B little-endian
// bytes, h[0] = XXH64(block 0, seed), h[b] = XXH64(block b, h[b−1]). Returns the number of full blocks,
// BLOCK_SIZE unless 1 ≤ blockSize ≤ 1024, or OUT_TOO_SMALL when outLen is below the block count.
int64_t HashTokens(const uint32_t* tokens, size_t tokenCount, uint32_t blockSize, uint64_t seed, uint64_t* out,
                   size_t outLen);

// The same over bytes, blockSize bytes a block.
int64_t HashBytes(const uint8_t* bytes, size_t byteCount, uint32_t blockSize, uint64_t seed, uint64_t* out,
                  size_t outLen);

// Many prompts in one call: prompt i is tokens[offsets[i], offsets[i+1]) for i < seedCount, chained from
// seeds[i], written at out[outOffsets[i] …]; outOffsets (seedCount + 1 entries) is filled by the kernel.
// Returns the total block count, BLOCK_SIZE, BAD_ARG (offsets/outOffsets shape) or OUT_TOO_SMALL.
int64_t HashTokensBatch(const uint32_t* tokens, size_t tokenCount, const uint32_t* offsets, size_t offsetCount,
                        const uint64_t* seeds, size_t seedCount, uint32_t blockSize, uint64_t* out, size_t outLen,
                        uint32_t* outOffsets, size_t outOffsetCount);

// ---- jump consistent hash (Lamping & Veach 2014) --------------------------------------------------

// `buckets` is a double so that out-of-contract values are classified here, like the JS reference:
// buckets < 1 or NaN → EMPTY; buckets > 2^31 − 1 → BAD_ARG. Returns the bucket in [0, buckets).
int32_t Jump(uint64_t key, double buckets);
int64_t JumpBatch(const uint64_t* keys, size_t count, double buckets, int32_t* out, size_t outLen);

// ---- ketama-style ring with a radix index ---------------------------------------------------------

// A ring as the host built it: `points` sorted ascending (n entries), `nodes` the node id of each point
// (n entries), `index` 2^bits + 1 entries with index[p] = first i with points[i] ≥ p·2^(32−bits).
struct Ring {
  const uint32_t* points;
  size_t n;
  const int32_t* nodes;
  size_t nodesLen;
  const uint32_t* index;
  size_t indexLen;
  uint32_t bits;
};

// Checks the ring's shape (nodes.length = points.length, index length 2^bits + 1, 1 ≤ bits ≤ 24):
// kOk or kBadArg. Lookups call it; a ring with a bad shape gives BAD_ARG (an empty one is still NO_NODE
// for single and batch lookups, whatever its index).
int32_t CheckRing(const Ring& ring);

// nodes[i] for the first i with points[i] ≥ (key mod 2^32), wrapping to nodes[0]; NO_NODE when n = 0.
int32_t RingLookup(const Ring& ring, uint64_t key);
int64_t RingLookupBatch(const Ring& ring, const uint64_t* keys, size_t count, int32_t* out, size_t outLen);

// Bounded-load assignment (Mirrokni, Thorup & Zadimoghaddam 2018) walking the ring from each key's
// point. loads/shares have nodeCount entries (else BAD_ARG); c must be finite and > 1 (else BAD_ARG).
// Returns the number of keys that got NO_NODE, or a negative status.
int64_t RingAssignBounded(const Ring& ring, size_t nodeCount, const uint64_t* keys, size_t count, uint32_t* loads,
                          size_t loadsLen, const double* shares, size_t sharesLen, double c, int32_t* out,
                          size_t outLen);

// ---- Maglev (Eisenbud et al., NSDI 2016) ----------------------------------------------------------

// Fills table[0, size) by weighted turns of §3.4 Pseudocode 1. `size` is a double so out-of-contract
// values (non-integer, < n, > 2^26) are BAD_ARG here. Returns size, BAD_ARG, OUT_TOO_SMALL (tableLen <
// size) or NO_MEMORY (scratch allocation failed). Also BAD_ARG when a node's probe sequence finds no
// empty slot within `size` steps, which can only happen when size is not prime (the host's check):
// the paper's loop would never end there.
int64_t MaglevBuild(const uint32_t* offsets, const uint32_t* skips, const uint32_t* weights, size_t n, double size,
                    int32_t* table, size_t tableLen);

// table[key mod size] (u64 modulo); NO_NODE for an empty table.
int32_t MaglevLookup(const int32_t* table, size_t size, uint64_t key);
int64_t MaglevLookupBatch(const int32_t* table, size_t size, const uint64_t* keys, size_t count, int32_t* out,
                          size_t outLen);
int64_t MaglevAssignBounded(const int32_t* table, size_t size, size_t nodeCount, const uint64_t* keys, size_t count,
                            uint32_t* loads, size_t loadsLen, const double* shares, size_t sharesLen, double c,
                            int32_t* out, size_t outLen);

// ---- weighted rendezvous (HRW) --------------------------------------------------------------------

// The SplitMix64 finalizer (Steele, Lea & Flood 2014), as written in abi.ts.
uint64_t Mix64(uint64_t z);

// The portable natural logarithm of abi.ts for positive normal doubles (identical bits in every backend).
double LnPortable(double x);

// Highest weight[i] / −ln(u_i) wins, lowest index on ties; NO_NODE when n = 0 or no score beats −∞.
int32_t RendezvousLookup(const uint64_t* nodeHashes, const double* weights, size_t n, uint64_t key);
int64_t RendezvousLookupBatch(const uint64_t* nodeHashes, const double* weights, size_t n, const uint64_t* keys,
                              size_t count, int32_t* out, size_t outLen);

}  // namespace dystro

#endif  // DYSTRO_NATIVE_KERNELS_H_
