// N-API bindings of the dystro kernels: the flat names of ABI_EXPORTS (src/kernels/abi.ts), each taking
// the caller's typed arrays and operating on their memory in place (no copies). src/kernels/native.ts
// adapts these to the KernelBackend interface.
//
// Signatures (JS view; every count or status is a number, 64-bit values are bigint). The table arguments
// (points, nodes, index, table, and rendezvous's nodeHashes and weights) take the typed array shown or
// a DataView over one (faster to decode, see ReadTable).
//   abiVersion(): number
//   xxh64(bytes: Uint8Array, seed: bigint): bigint | number(status)
//   hashTokens(tokens: Uint32Array, blockSize: number, seed: bigint, out: BigUint64Array): number
//   hashBytes(bytes: Uint8Array, blockSize: number, seed: bigint, out: BigUint64Array): number
//   hashTokensBatch(tokens: Uint32Array, offsets: Uint32Array, seeds: BigUint64Array, blockSize: number,
//                   out: BigUint64Array, outOffsets: Uint32Array): number
//   jump(key: bigint, buckets: number): number
//   jumpBatch(keys: BigUint64Array, buckets: number, out: Int32Array): number
//   ringLookup(points: Uint32Array, nodes: Int32Array, index: Uint32Array, bits: number, key: bigint): number
//   ringLookupBatch(points, nodes, index, bits, keys: BigUint64Array, out: Int32Array): number
//   ringAssignBounded(points, nodes, index, bits, nodeCount: number, keys: BigUint64Array,
//                     loads: Uint32Array, shares: Float64Array, c: number, out: Int32Array): number
//   maglevBuild(offsets: Uint32Array, skips: Uint32Array, weights: Uint32Array, size: number,
//               tableOut: Int32Array): number
//   maglevLookup(table: Int32Array, key: bigint): number
//   maglevLookupBatch(table: Int32Array, keys: BigUint64Array, out: Int32Array): number
//   maglevAssignBounded(table: Int32Array, nodeCount: number, keys: BigUint64Array, loads: Uint32Array,
//                       shares: Float64Array, c: number, out: Int32Array): number
//   rendezvousLookup(nodeHashes: BigUint64Array, weights: Float64Array, key: bigint): number
//   rendezvousLookupBatch(nodeHashes: BigUint64Array, weights: Float64Array, keys: BigUint64Array,
//                         out: Int32Array): number
// The prefix index (INDEX_EXPORTS; the index lives in C++, prefix_index.h, behind an external handle):
//   indexCreate(maxEntries: number, replicaCapacity: number, seed: number, ttlMs: number): handle | number
//   indexApply(handle, records: Uint32Array, count: number, nowMs: number): number
//   indexMatch(handle, hashes: BigUint64Array, count: number, nowMs: number, out: Uint32Array): number
//   indexStats(handle, out: Float64Array): number (OK or BAD_ARG)
//   indexDump(handle, nowMs: number): Uint32Array | number(status)
//   indexFree(handle): number (OK or BAD_ARG)
//
// Nothing here throws into JS: an argument of the wrong type (a plain Array, an Int32Array where a
// Uint32Array is due, a number where a bigint is due, a missing argument) returns BAD_ARG, following
// abi.ts ("nothing throws and nothing traps"). A bigint outside 0 … 2^64−1 is taken mod 2^64, as
// BigInt.asUintN(64, x) and the wasm i64 conversion do.
//
// Why the hot paths use the N-API C functions rather than node-addon-api's wrappers: Napi::CallbackInfo
// heap-allocates its argument array beyond six arguments (ringAssignBounded has ten), and
// Napi::TypedArrayOf<T> spends one N-API call on the type check and another on the data, where one
// napi_get_typedarray_info answers type, length and data together. At roughly 5–15 ns per N-API call
// (TOOLCHAIN.md: 19 ns for an empty call) that is most of a ring lookup. node-addon-api still provides
// the module registration.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <new>
#include <string>

#include "kernels.h"
#include "prefix_index.h"

namespace {

using dystro::kBadArg;
using dystro::kOk;

constexpr size_t kMaxArgs = 10;

template <typename T>
struct Span {
  T* data = nullptr;
  size_t len = 0;  // elements
};

template <typename T>
struct ArrayType;
template <>
struct ArrayType<uint8_t> {
  static constexpr napi_typedarray_type kType = napi_uint8_array;
};
template <>
struct ArrayType<uint32_t> {
  static constexpr napi_typedarray_type kType = napi_uint32_array;
};
template <>
struct ArrayType<int32_t> {
  static constexpr napi_typedarray_type kType = napi_int32_array;
};
template <>
struct ArrayType<uint64_t> {
  static constexpr napi_typedarray_type kType = napi_biguint64_array;
};
template <>
struct ArrayType<double> {
  static constexpr napi_typedarray_type kType = napi_float64_array;
};

// The arguments of one call. Missing arguments read as `undefined` (napi_get_cb_info pads them), so
// they fail the type checks below instead of being read out of bounds.
struct Args {
  napi_value v[kMaxArgs];
  bool ok;
  Args(napi_env env, napi_callback_info info) {
    size_t argc = kMaxArgs;
    ok = napi_get_cb_info(env, info, &argc, v, nullptr, nullptr) == napi_ok;
  }
};

// A typed array of exactly element type T (a Buffer counts as a Uint8Array), viewed in place. A
// detached buffer reads as length 0.
template <typename T>
bool ReadArray(napi_env env, napi_value value, Span<T>* out) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) return false;
  if (type != ArrayType<T>::kType) return false;
  if (data == nullptr) length = 0;
  out->data = static_cast<T*>(data);
  out->len = length;
  return true;
}

// A table argument (ring points/nodes/index, Maglev entries, rendezvous hashes/weights): a typed array of
// element type T, or a DataView over one. The DataView form exists for speed: N-API answers a DataView
// in about 9 ns against 23–35 ns for a typed array, most of which goes into finding the element type
// (a chain of IsInt8Array … IsBigUint64Array checks). native.ts makes the views once, when the table is
// created, so a single ring lookup decodes three tables in ~27 ns instead of ~100. Memory safety does not
// depend on the element type: the element count is the view's byte length / sizeof(T), and a view
// not aligned for T is refused (typed arrays are always aligned; DataViews need not be).
template <typename T>
bool ReadTable(napi_env env, napi_value value, Span<T>* out) {
  size_t bytes = 0;
  void* data = nullptr;
  if (napi_get_dataview_info(env, value, &bytes, &data, nullptr, nullptr) != napi_ok) return ReadArray(env, value, out);
  if (data == nullptr) bytes = 0;
  if (reinterpret_cast<uintptr_t>(data) % alignof(T) != 0) return false;
  out->data = static_cast<T*>(data);
  out->len = bytes / sizeof(T);
  return true;
}

// A bigint, reduced mod 2^64 (the lossless flag is ignored on purpose, see the top of the file).
bool ReadU64(napi_env env, napi_value value, uint64_t* out) {
  bool lossless;
  return napi_get_value_bigint_uint64(env, value, out, &lossless) == napi_ok;
}

bool ReadNumber(napi_env env, napi_value value, double* out) {
  return napi_get_value_double(env, value, out) == napi_ok;
}

// A JS number that must be an integer in [0, max]; anything else (including a non-number) is false.
bool ReadCount(napi_env env, napi_value value, double max, size_t* out) {
  double d;
  if (!ReadNumber(env, value, &d)) return false;
  if (!(d >= 0 && d <= max) || std::floor(d) != d) return false;
  *out = static_cast<size_t>(d);
  return true;
}

// Block size: BAD_ARG when not a number, BLOCK_SIZE when not an integer in 1 … 1024 (the JS reference
// rejects 16.5 with BLOCK_SIZE too).
int32_t ReadBlockSize(napi_env env, napi_value value, uint32_t* out) {
  double d;
  if (!ReadNumber(env, value, &d)) return kBadArg;
  if (!(d >= dystro::kMinBlockSize && d <= dystro::kMaxBlockSize) || std::floor(d) != d) return dystro::kBlockSize;
  *out = static_cast<uint32_t>(d);
  return kOk;
}

// Ring arguments points, nodes, index (tables), bits at v[0 … 3]. A `bits` outside 1 … 24 (or non-integer) is
// kept as 0 so that CheckRing reports BAD_ARG, except for an empty ring, which is NO_NODE regardless.
bool ReadRing(napi_env env, const napi_value* v, dystro::Ring* ring) {
  Span<uint32_t> p;
  Span<int32_t> nd;
  Span<uint32_t> ix;
  double bits;
  if (!ReadTable(env, v[0], &p) || !ReadTable(env, v[1], &nd) || !ReadTable(env, v[2], &ix) ||
      !ReadNumber(env, v[3], &bits)) {
    return false;
  }
  ring->points = p.data;
  ring->n = p.len;
  ring->nodes = nd.data;
  ring->nodesLen = nd.len;
  ring->index = ix.data;
  ring->indexLen = ix.len;
  const bool bitsOk = bits >= dystro::kMinRingIndexBits && bits <= dystro::kMaxRingIndexBits && std::floor(bits) == bits;
  ring->bits = bitsOk ? static_cast<uint32_t>(bits) : 0;
  return true;
}

napi_value Int32(napi_env env, int32_t value) {
  napi_value result = nullptr;
  napi_create_int32(env, value, &result);
  return result;
}

// Counts can exceed 2^31 (hashBytes with B = 1 over a 3 GB buffer); int64 → Number is exact below 2^53.
napi_value Int64(napi_env env, int64_t value) {
  napi_value result = nullptr;
  napi_create_int64(env, value, &result);
  return result;
}

napi_value BadArg(napi_env env) { return Int32(env, kBadArg); }

// ---- bindings ------------------------------------------------------------------------------------

napi_value AbiVersion(napi_env env, napi_callback_info /*info*/) { return Int32(env, dystro::kAbiVersion); }

napi_value Xxh64(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint8_t> bytes;
  uint64_t seed;
  if (!a.ok || !ReadArray(env, a.v[0], &bytes) || !ReadU64(env, a.v[1], &seed)) return BadArg(env);
  napi_value result = nullptr;  // control path: allocating the bigint is allowed here
  napi_create_bigint_uint64(env, dystro::Xxh64(bytes.data, bytes.len, seed), &result);
  return result;
}

napi_value HashTokens(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint32_t> tokens;
  uint64_t seed;
  Span<uint64_t> out;
  uint32_t blockSize = 0;
  if (!a.ok || !ReadArray(env, a.v[0], &tokens) || !ReadU64(env, a.v[2], &seed) || !ReadArray(env, a.v[3], &out)) {
    return BadArg(env);
  }
  const int32_t bs = ReadBlockSize(env, a.v[1], &blockSize);
  if (bs != kOk) return Int32(env, bs);
  return Int64(env, dystro::HashTokens(tokens.data, tokens.len, blockSize, seed, out.data, out.len));
}

napi_value HashBytes(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint8_t> bytes;
  uint64_t seed;
  Span<uint64_t> out;
  uint32_t blockSize = 0;
  if (!a.ok || !ReadArray(env, a.v[0], &bytes) || !ReadU64(env, a.v[2], &seed) || !ReadArray(env, a.v[3], &out)) {
    return BadArg(env);
  }
  const int32_t bs = ReadBlockSize(env, a.v[1], &blockSize);
  if (bs != kOk) return Int32(env, bs);
  return Int64(env, dystro::HashBytes(bytes.data, bytes.len, blockSize, seed, out.data, out.len));
}

napi_value HashTokensBatch(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint32_t> tokens;
  Span<uint32_t> offsets;
  Span<uint64_t> seeds;
  Span<uint64_t> out;
  Span<uint32_t> outOffsets;
  uint32_t blockSize = 0;
  if (!a.ok || !ReadArray(env, a.v[0], &tokens) || !ReadArray(env, a.v[1], &offsets) ||
      !ReadArray(env, a.v[2], &seeds) || !ReadArray(env, a.v[4], &out) || !ReadArray(env, a.v[5], &outOffsets)) {
    return BadArg(env);
  }
  const int32_t bs = ReadBlockSize(env, a.v[3], &blockSize);
  if (bs != kOk) return Int32(env, bs);
  return Int64(env, dystro::HashTokensBatch(tokens.data, tokens.len, offsets.data, offsets.len, seeds.data, seeds.len,
                                            blockSize, out.data, out.len, outOffsets.data, outOffsets.len));
}

napi_value Jump(napi_env env, napi_callback_info info) {
  Args a(env, info);
  uint64_t key;
  double buckets;
  if (!a.ok || !ReadU64(env, a.v[0], &key) || !ReadNumber(env, a.v[1], &buckets)) return BadArg(env);
  return Int32(env, dystro::Jump(key, buckets));
}

napi_value JumpBatch(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint64_t> keys;
  double buckets;
  Span<int32_t> out;
  if (!a.ok || !ReadArray(env, a.v[0], &keys) || !ReadNumber(env, a.v[1], &buckets) || !ReadArray(env, a.v[2], &out)) {
    return BadArg(env);
  }
  return Int64(env, dystro::JumpBatch(keys.data, keys.len, buckets, out.data, out.len));
}

napi_value RingLookup(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::Ring ring;
  uint64_t key;
  if (!a.ok || !ReadRing(env, a.v, &ring) || !ReadU64(env, a.v[4], &key)) return BadArg(env);
  return Int32(env, dystro::RingLookup(ring, key));
}

napi_value RingLookupBatch(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::Ring ring;
  Span<uint64_t> keys;
  Span<int32_t> out;
  if (!a.ok || !ReadRing(env, a.v, &ring) || !ReadArray(env, a.v[4], &keys) || !ReadArray(env, a.v[5], &out)) {
    return BadArg(env);
  }
  return Int64(env, dystro::RingLookupBatch(ring, keys.data, keys.len, out.data, out.len));
}

napi_value RingAssignBounded(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::Ring ring;
  size_t nodeCount;
  Span<uint64_t> keys;
  Span<uint32_t> loads;
  Span<double> shares;
  double c;
  Span<int32_t> out;
  if (!a.ok || !ReadRing(env, a.v, &ring) || !ReadCount(env, a.v[4], 4294967295.0, &nodeCount) ||
      !ReadArray(env, a.v[5], &keys) || !ReadArray(env, a.v[6], &loads) || !ReadArray(env, a.v[7], &shares) ||
      !ReadNumber(env, a.v[8], &c) || !ReadArray(env, a.v[9], &out)) {
    return BadArg(env);
  }
  return Int64(env, dystro::RingAssignBounded(ring, nodeCount, keys.data, keys.len, loads.data, loads.len, shares.data,
                                              shares.len, c, out.data, out.len));
}

napi_value MaglevBuild(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint32_t> offsets;
  Span<uint32_t> skips;
  Span<uint32_t> weights;
  double size;
  Span<int32_t> table;
  if (!a.ok || !ReadArray(env, a.v[0], &offsets) || !ReadArray(env, a.v[1], &skips) ||
      !ReadArray(env, a.v[2], &weights) || !ReadNumber(env, a.v[3], &size) || !ReadArray(env, a.v[4], &table)) {
    return BadArg(env);
  }
  if (skips.len != offsets.len || weights.len != offsets.len) return BadArg(env);
  return Int64(env, dystro::MaglevBuild(offsets.data, skips.data, weights.data, offsets.len, size, table.data, table.len));
}

napi_value MaglevLookup(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<int32_t> table;
  uint64_t key;
  if (!a.ok || !ReadTable(env, a.v[0], &table) || !ReadU64(env, a.v[1], &key)) return BadArg(env);
  return Int32(env, dystro::MaglevLookup(table.data, table.len, key));
}

napi_value MaglevLookupBatch(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<int32_t> table;
  Span<uint64_t> keys;
  Span<int32_t> out;
  if (!a.ok || !ReadTable(env, a.v[0], &table) || !ReadArray(env, a.v[1], &keys) || !ReadArray(env, a.v[2], &out)) {
    return BadArg(env);
  }
  return Int64(env, dystro::MaglevLookupBatch(table.data, table.len, keys.data, keys.len, out.data, out.len));
}

napi_value MaglevAssignBounded(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<int32_t> table;
  size_t nodeCount;
  Span<uint64_t> keys;
  Span<uint32_t> loads;
  Span<double> shares;
  double c;
  Span<int32_t> out;
  if (!a.ok || !ReadTable(env, a.v[0], &table) || !ReadCount(env, a.v[1], 4294967295.0, &nodeCount) ||
      !ReadArray(env, a.v[2], &keys) || !ReadArray(env, a.v[3], &loads) || !ReadArray(env, a.v[4], &shares) ||
      !ReadNumber(env, a.v[5], &c) || !ReadArray(env, a.v[6], &out)) {
    return BadArg(env);
  }
  return Int64(env, dystro::MaglevAssignBounded(table.data, table.len, nodeCount, keys.data, keys.len, loads.data,
                                                loads.len, shares.data, shares.len, c, out.data, out.len));
}

napi_value RendezvousLookup(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint64_t> hashes;
  Span<double> weights;
  uint64_t key;
  if (!a.ok || !ReadTable(env, a.v[0], &hashes) || !ReadTable(env, a.v[1], &weights) || !ReadU64(env, a.v[2], &key)) {
    return BadArg(env);
  }
  if (weights.len != hashes.len) return BadArg(env);
  return Int32(env, dystro::RendezvousLookup(hashes.data, weights.data, hashes.len, key));
}

napi_value RendezvousLookupBatch(napi_env env, napi_callback_info info) {
  Args a(env, info);
  Span<uint64_t> hashes;
  Span<double> weights;
  Span<uint64_t> keys;
  Span<int32_t> out;
  if (!a.ok || !ReadTable(env, a.v[0], &hashes) || !ReadTable(env, a.v[1], &weights) ||
      !ReadArray(env, a.v[2], &keys) || !ReadArray(env, a.v[3], &out)) {
    return BadArg(env);
  }
  if (weights.len != hashes.len) return BadArg(env);
  return Int64(env,
               dystro::RendezvousLookupBatch(hashes.data, weights.data, hashes.len, keys.data, keys.len, out.data, out.len));
}

// ---- prefix index --------------------------------------------------------------------------------
//
// A handle is an external whose data is an IndexBox. The box owns the C++ index until indexFree deletes
// it (setting `index` to null, so later calls with the handle answer BAD_ARG instead of touching freed
// memory); the external's finalizer deletes whatever is left when the handle is garbage collected, so an
// index the host forgot to free is still released. The externals carry a type tag so that an external
// made by some other addon is refused rather than misread. The index's memory is reported to V8 as
// external memory (napi_adjust_external_memory) so the garbage collector sees what a handle costs.

struct IndexBox {
  dystro::PrefixIndex* index;
  int64_t reported;  // bytes currently reported to V8 as external memory
};

// Random, fixed: identifies handles made by this addon.
constexpr napi_type_tag kIndexTag = {0x64797374726f5049ULL, 0x9b1c3f5e27d84a61ULL};

// Brings V8's external-memory figure in line with what the index holds now (it changes only when the
// table or the arena grows, so on the hot path this is one comparison).
void Account(napi_env env, IndexBox* box) {
  const int64_t now = box->index != nullptr ? static_cast<int64_t>(box->index->AllocatedBytes()) : 0;
  if (now == box->reported) return;
  int64_t total;
  napi_adjust_external_memory(env, now - box->reported, &total);
  box->reported = now;
}

void FinalizeIndex(napi_env env, void* data, void* /*hint*/) {
  IndexBox* box = static_cast<IndexBox*>(data);
  delete box->index;
  box->index = nullptr;
  Account(env, box);
  delete box;
}

// The live index behind a handle; false for anything else (a freed handle included).
bool ReadIndex(napi_env env, napi_value value, dystro::PrefixIndex** out) {
  void* data = nullptr;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == nullptr) return false;
  bool tagged = false;
  if (napi_check_object_type_tag(env, value, &kIndexTag, &tagged) != napi_ok || !tagged) return false;
  *out = static_cast<IndexBox*>(data)->index;
  return *out != nullptr;
}

// A clock reading as the spec takes it (`now >>>= 0`): ToUint32 of any number, so NaN and ±∞ give 0,
// fractions truncate toward zero and everything wraps mod 2^32. False only for a non-number.
bool ReadStamp(napi_env env, napi_value value, uint32_t* out) {
  double d;
  if (!ReadNumber(env, value, &d)) return false;
  if (!std::isfinite(d)) {
    *out = 0;
    return true;
  }
  double m = std::fmod(std::trunc(d), 4294967296.0);
  if (m < 0) m += 4294967296.0;
  *out = static_cast<uint32_t>(m);
  return true;
}

napi_value IndexCreate(napi_env env, napi_callback_info info) {
  Args a(env, info);
  size_t maxEntries;
  size_t replicas;
  size_t seed;
  size_t ttl;
  if (!a.ok || !ReadCount(env, a.v[0], static_cast<double>(dystro::kIndexMaxEntries), &maxEntries) ||
      !ReadCount(env, a.v[1], dystro::kIndexMaxReplicas, &replicas) || replicas < 1 ||
      !ReadCount(env, a.v[2], 4294967295.0, &seed) || !ReadCount(env, a.v[3], 4294967295.0, &ttl)) {
    return BadArg(env);
  }
  dystro::PrefixIndexOptions options;
  options.maxEntries = maxEntries;
  options.replicaCapacity = static_cast<uint32_t>(replicas);
  options.seed = static_cast<uint32_t>(seed);
  options.ttlMs = static_cast<uint32_t>(ttl);
  IndexBox* box = new (std::nothrow) IndexBox{dystro::PrefixIndex::Create(options), 0};
  if (box == nullptr || box->index == nullptr) {
    if (box != nullptr) delete box;
    return Int32(env, dystro::kNoMemory);
  }
  napi_value handle = nullptr;
  if (napi_create_external(env, box, FinalizeIndex, nullptr, &handle) != napi_ok ||
      napi_type_tag_object(env, handle, &kIndexTag) != napi_ok) {
    if (handle == nullptr) {  // not owned by a finalizer yet
      delete box->index;
      delete box;
    }
    return Int32(env, dystro::kNoMemory);
  }
  Account(env, box);
  return handle;
}

napi_value IndexApply(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::PrefixIndex* index;
  Span<uint32_t> records;
  size_t count;
  uint32_t now;
  if (!a.ok || !ReadIndex(env, a.v[0], &index) || !ReadArray(env, a.v[1], &records) ||
      !ReadCount(env, a.v[2], 9007199254740991.0, &count) || !ReadStamp(env, a.v[3], &now)) {
    return BadArg(env);
  }
  const int64_t r = index->Apply(records.data, records.len, count, now);
  void* data = nullptr;
  napi_get_value_external(env, a.v[0], &data);
  Account(env, static_cast<IndexBox*>(data));
  return Int64(env, r);
}

napi_value IndexMatch(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::PrefixIndex* index;
  Span<uint64_t> hashes;
  size_t count;
  uint32_t now;
  Span<uint32_t> out;
  if (!a.ok || !ReadIndex(env, a.v[0], &index) || !ReadArray(env, a.v[1], &hashes) ||
      !ReadCount(env, a.v[2], 9007199254740991.0, &count) || !ReadStamp(env, a.v[3], &now) ||
      !ReadArray(env, a.v[4], &out)) {
    return BadArg(env);
  }
  if (count > hashes.len) return BadArg(env);
  // The kernel reads hashes ahead of the block it judges while it writes out: views of one buffer that
  // overlap would make the result depend on that order, so they are refused (as the wasm module refuses
  // overlapping written regions).
  const uintptr_t h0 = reinterpret_cast<uintptr_t>(hashes.data);
  const uintptr_t o0 = reinterpret_cast<uintptr_t>(out.data);
  if (count > 0 && out.len > 0 && h0 < o0 + out.len * sizeof(uint32_t) && o0 < h0 + count * sizeof(uint64_t)) {
    return BadArg(env);
  }
  return Int64(env, index->Match(hashes.data, count, now, out.data, out.len));
}

napi_value IndexStats(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::PrefixIndex* index;
  Span<double> out;
  if (!a.ok || !ReadIndex(env, a.v[0], &index) || !ReadArray(env, a.v[1], &out)) return BadArg(env);
  index->Stats(out.data, out.len);
  return Int32(env, kOk);
}

// Control path: counts the live holders, allocates the result on the JS heap, then fills it.
napi_value IndexDump(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::PrefixIndex* index;
  uint32_t now;
  if (!a.ok || !ReadIndex(env, a.v[0], &index) || !ReadStamp(env, a.v[1], &now)) return BadArg(env);
  const size_t holders = index->CountLive(now);
  if (holders > SIZE_MAX / (dystro::kIndexDumpWords * sizeof(uint32_t))) return Int32(env, dystro::kNoMemory);
  const size_t words = holders * dystro::kIndexDumpWords;
  void* data = nullptr;
  napi_value buffer = nullptr;
  napi_value array = nullptr;
  if (napi_create_arraybuffer(env, words * sizeof(uint32_t), &data, &buffer) != napi_ok ||
      napi_create_typedarray(env, napi_uint32_array, words, buffer, 0, &array) != napi_ok) {
    // A failed allocation may leave a pending RangeError; clear it so nothing throws into JS.
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    return Int32(env, dystro::kNoMemory);
  }
  if (words > 0) index->Dump(now, static_cast<uint32_t*>(data), words);
  return array;
}

napi_value IndexFree(napi_env env, napi_callback_info info) {
  Args a(env, info);
  dystro::PrefixIndex* index;
  if (!a.ok || !ReadIndex(env, a.v[0], &index)) return BadArg(env);
  void* data = nullptr;
  napi_get_value_external(env, a.v[0], &data);
  IndexBox* box = static_cast<IndexBox*>(data);
  delete box->index;
  box->index = nullptr;
  Account(env, box);
  return Int32(env, kOk);
}

// ---- registration --------------------------------------------------------------------------------

struct Export {
  const char* name;
  napi_callback callback;
};

// Exactly ABI_EXPORTS then INDEX_EXPORTS of src/kernels/abi.ts, in the same order; native.ts checks every
// name is present.
constexpr Export kExports[] = {
    {"abiVersion", AbiVersion},
    {"xxh64", Xxh64},
    {"hashTokens", HashTokens},
    {"hashBytes", HashBytes},
    {"hashTokensBatch", HashTokensBatch},
    {"jump", Jump},
    {"jumpBatch", JumpBatch},
    {"ringLookup", RingLookup},
    {"ringLookupBatch", RingLookupBatch},
    {"ringAssignBounded", RingAssignBounded},
    {"maglevBuild", MaglevBuild},
    {"maglevLookup", MaglevLookup},
    {"maglevLookupBatch", MaglevLookupBatch},
    {"maglevAssignBounded", MaglevAssignBounded},
    {"rendezvousLookup", RendezvousLookup},
    {"rendezvousLookupBatch", RendezvousLookupBatch},
    {"indexCreate", IndexCreate},
    {"indexApply", IndexApply},
    {"indexMatch", IndexMatch},
    {"indexStats", IndexStats},
    {"indexDump", IndexDump},
    {"indexFree", IndexFree},
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  for (const Export& e : kExports) {
    napi_value fn;
    if (napi_create_function(env, e.name, NAPI_AUTO_LENGTH, e.callback, nullptr, &fn) != napi_ok) {
      // Surfaces as an exception from require(), which native.ts reports as "failed to load".
      Napi::Error::New(env, std::string("dystro: could not create native function ") + e.name)
          .ThrowAsJavaScriptException();
      return exports;
    }
    exports.Set(e.name, Napi::Value(env, fn));
  }
  return exports;
}

}  // namespace

NODE_API_MODULE(dystro, Init)
