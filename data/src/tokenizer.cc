// Byte-pair encoding with GPT-2's merge ranks, and the per-thread piece cache (see tokenizer.h).
#include "dtrn/data/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "bpe_vocab.h"
#include "dtrn/runtime/sha256.h"
#include "pretokenizer.h"

namespace dtrn::data {
namespace {

// Bumped whenever encode() could change for the same files (pre-tokenizer or merge rule): it is
// part of identity(), so shards made by an older encoder are told apart.
constexpr char kEncoderVersion[] = "dtrn-bpe-1 gpt2-pretokenizer unicode-14.0.0";

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
  }
  h ^= h >> 29;
  return h | 1;  // 0 marks an empty cache slot
}

inline uint64_t pair_key(uint32_t left, uint32_t right) { return (uint64_t(left) << 32) | right; }

// Open-addressing map from a token pair to its merge (rank and the merged token's id).
class MergeTable {
 public:
  struct Merge {
    uint32_t rank, id;
  };

  void build(const std::vector<std::pair<uint32_t, uint32_t>>& merges,
             const std::vector<uint32_t>& ids) {
    size_t capacity = 16;
    while (capacity < 2 * merges.size()) capacity *= 2;
    mask_ = capacity - 1;
    slots_.assign(capacity, Slot{kEmpty, {0, 0}});
    for (size_t r = 0; r < merges.size(); ++r) {
      const uint64_t key = pair_key(merges[r].first, merges[r].second);
      size_t i = slot_of(key);
      while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
      if (slots_[i].key == key) continue;  // a repeated pair keeps its first (lowest) rank
      slots_[i] = Slot{key, {static_cast<uint32_t>(r), ids[r]}};
    }
  }

  // The merge of (left, right), or nullptr when the pair never merges.
  const Merge* find(uint32_t left, uint32_t right) const {
    const uint64_t key = pair_key(left, right);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  size_t slot_of(uint64_t key) const { return ((key * 0x9E3779B97F4A7C15ull) >> 40) & mask_; }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

std::atomic<uint64_t> next_tables_uid{1};

}  // namespace

struct Tokenizer::Tables {
  std::string name;
  std::vector<std::string> tokens;
  uint32_t byte_id[256];
  MergeTable merges;
  uint32_t eot_id;
  std::string identity;
  std::vector<TokenizerSource> sources;
  uint64_t uid;  // tells the thread-local caches of different tokenizers apart
};

StatusOr<Tokenizer> Tokenizer::FromVocab(BpeVocab vocab) {
  auto tables = std::make_shared<Tables>();
  const uint32_t n = static_cast<uint32_t>(vocab.tokens.size());
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(vocab.origin + ": " + why);
  };
  if (n > 65536)
    return bad("vocabulary of " + std::to_string(n) + " ids does not fit uint16 shards");

  std::unordered_map<std::string, uint32_t> id_of;
  for (uint32_t id = 0; id < n; ++id) {
    if (id == vocab.eot_id) continue;
    if (vocab.tokens[id].empty()) return bad("id " + std::to_string(id) + " has no token");
    if (!id_of.emplace(vocab.tokens[id], id).second) {
      return bad("token of id " + std::to_string(id) + " listed twice");
    }
  }
  for (int b = 0; b < 256; ++b) {
    auto it = id_of.find(std::string(1, static_cast<char>(b)));
    if (it == id_of.end()) return bad("no token for byte " + std::to_string(b));
    tables->byte_id[b] = it->second;
  }
  std::vector<uint32_t> merged_ids;
  merged_ids.reserve(vocab.merges.size());
  for (size_t r = 0; r < vocab.merges.size(); ++r) {
    auto [left, right] = vocab.merges[r];
    auto it = id_of.find(vocab.tokens[left] + vocab.tokens[right]);
    if (it == id_of.end())
      return bad("merge " + std::to_string(r) + " makes a token not in the vocabulary");
    merged_ids.push_back(it->second);
  }
  tables->merges.build(vocab.merges, merged_ids);

  Sha256 h;
  auto put_u32 = [&](uint32_t v) { h.update(&v, sizeof v); };
  h.update(kEncoderVersion, sizeof kEncoderVersion);
  put_u32(n);
  for (const std::string& t : vocab.tokens) {
    put_u32(static_cast<uint32_t>(t.size()));
    h.update(t);
  }
  put_u32(static_cast<uint32_t>(vocab.merges.size()));
  for (auto [left, right] : vocab.merges) put_u32(left), put_u32(right);
  put_u32(vocab.eot_id);

  tables->name = std::move(vocab.name);
  tables->tokens = std::move(vocab.tokens);
  tables->eot_id = vocab.eot_id;
  tables->identity = h.hex_digest();
  tables->sources = std::move(vocab.sources);
  tables->uid = next_tables_uid.fetch_add(1);
  return Tokenizer(std::move(tables));
}

namespace {

// Piece bytes -> ids, open addressing, keys and values in two arenas. One per thread (see
// encode_piece).
class PieceCache {
 public:
  const uint32_t* find(std::string_view piece, uint64_t hash, uint32_t* count) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return nullptr;
      if (s.hash == hash && s.key_len == piece.size() &&
          std::memcmp(keys_.data() + s.key_off, piece.data(), piece.size()) == 0) {
        *count = s.val_len;
        return values_.data() + s.val_off;
      }
    }
  }

  void insert(std::string_view piece, uint64_t hash, const uint32_t* ids, uint32_t count) {
    if (used_ >= kMaxEntries) clear();  // bounded memory on an endless stream of new words
    if (2 * (used_ + 1) > slots_.size()) grow();
    size_t i = hash & mask_;
    while (slots_[i].hash != 0) i = (i + 1) & mask_;
    slots_[i] = Slot{hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(piece.size()),
                     static_cast<uint32_t>(values_.size()), count};
    keys_.append(piece);
    values_.insert(values_.end(), ids, ids + count);
    ++used_;
  }

  void clear() {
    slots_.clear();
    keys_.clear();
    values_.clear();
    used_ = 0;
    mask_ = 0;
  }

  uint64_t owner = 0;

 private:
  static constexpr size_t kMaxEntries = size_t(1) << 20;
  struct Slot {
    uint64_t hash;
    uint32_t key_off, key_len, val_off, val_len;
  };

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 4096 : 2 * old.size(), Slot{0, 0, 0, 0, 0});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.hash == 0) continue;
      size_t i = s.hash & mask_;
      while (slots_[i].hash != 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<uint32_t> values_;
  size_t used_ = 0;
  size_t mask_ = 0;
};

// Pieces longer than this are encoded every time: they are rare (long runs of spaces or symbols)
// and would bloat the cache.
constexpr size_t kMaxCachedPiece = 128;

// BPE over one piece: repeatedly merge the lowest-ranked adjacent pair, leftmost first, until no
// pair merges. A min-heap of candidate pairs over a linked list of parts keeps this O(n log n) for
// long pieces; heap entries go stale when a neighbour merges and are skipped when popped.
struct BpeScratch {
  struct Candidate {
    uint32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<uint32_t> id, prev, next;
  std::vector<Candidate> heap;
};

}  // namespace

void Tokenizer::encode_piece(std::string_view piece, std::vector<uint32_t>* ids) const {
  const Tables& t = *tables_;
  if (piece.size() == 1) {
    ids->push_back(t.byte_id[static_cast<unsigned char>(piece[0])]);
    return;
  }
  thread_local PieceCache cache;
  if (cache.owner != t.uid) {
    cache.clear();
    cache.owner = t.uid;
  }
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  uint64_t hash = 0;
  if (cacheable) {
    hash = hash_bytes(piece.data(), piece.size());
    uint32_t count;
    if (const uint32_t* hit = cache.find(piece, hash, &count)) {
      ids->insert(ids->end(), hit, hit + count);
      return;
    }
  }

  thread_local BpeScratch s;
  const uint32_t n = static_cast<uint32_t>(piece.size());
  s.id.resize(n);
  s.prev.resize(n);
  s.next.resize(n);
  s.heap.clear();
  constexpr uint32_t kNone = UINT32_MAX;
  auto greater = std::greater<BpeScratch::Candidate>();
  auto push = [&](uint32_t pos) {
    if (pos == kNone || s.next[pos] == kNone) return;
    const uint32_t right = s.next[pos];
    if (const MergeTable::Merge* m = t.merges.find(s.id[pos], s.id[right])) {
      s.heap.push_back({m->rank, pos, s.id[pos], s.id[right]});
      std::push_heap(s.heap.begin(), s.heap.end(), greater);
    }
  };
  for (uint32_t i = 0; i < n; ++i) {
    s.id[i] = t.byte_id[static_cast<unsigned char>(piece[i])];
    s.prev[i] = i == 0 ? kNone : i - 1;
    s.next[i] = i + 1 == n ? kNone : i + 1;
  }
  for (uint32_t i = 0; i + 1 < n; ++i) push(i);
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), greater);
    const BpeScratch::Candidate c = s.heap.back();
    s.heap.pop_back();
    const uint32_t right = s.next[c.pos];
    // Stale: the left part was absorbed (its id slot is reused only by live parts) or either side
    // changed.
    if (right == kNone || s.id[c.pos] != c.left || s.id[right] != c.right ||
        s.prev[right] != c.pos) {
      continue;
    }
    s.id[c.pos] = t.merges.find(c.left, c.right)->id;
    s.next[c.pos] = s.next[right];
    if (s.next[right] != kNone) s.prev[s.next[right]] = c.pos;
    s.prev[right] = kNone;
    s.next[right] = kNone;
    s.id[right] = kNone;
    if (s.prev[c.pos] != kNone) push(s.prev[c.pos]);
    push(c.pos);
  }
  const size_t first = ids->size();
  for (uint32_t i = 0; i != kNone; i = s.next[i]) ids->push_back(s.id[i]);
  if (cacheable) {
    cache.insert(piece, hash, ids->data() + first, static_cast<uint32_t>(ids->size() - first));
  }
}

void Tokenizer::encode(std::string_view text, std::vector<uint32_t>* ids) const {
  PreTokenizer scanner(text);
  std::string_view piece;
  while (scanner.next(&piece)) encode_piece(piece, ids);
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3);
  encode(text, &ids);
  return ids;
}

StatusOr<std::string> Tokenizer::decode(std::span<const uint32_t> ids) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= tables_->tokens.size()) {
      return Status::InvalidArgument("token id " + std::to_string(ids[i]) + " (position " +
                                     std::to_string(i) + ") is not below the vocabulary size " +
                                     std::to_string(tables_->tokens.size()));
    }
    out += tables_->tokens[ids[i]];
  }
  return out;
}

std::string_view Tokenizer::token_bytes(uint32_t id) const {
  DTRN_CHECK(id < tables_->tokens.size(), "token id ", id, " out of range");
  return tables_->tokens[id];
}

uint32_t Tokenizer::vocab_size() const { return static_cast<uint32_t>(tables_->tokens.size()); }
uint32_t Tokenizer::eot_id() const { return tables_->eot_id; }
const std::string& Tokenizer::name() const { return tables_->name; }
const std::string& Tokenizer::identity() const { return tables_->identity; }
const std::vector<TokenizerSource>& Tokenizer::sources() const { return tables_->sources; }

}  // namespace dtrn::data
