#include "client/src/route_index.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace client_internal {
namespace {

constexpr uint32_t kPoolIndexBits = 24;
constexpr uint32_t kPoolIndexMask = (1u << kPoolIndexBits) - 1;
// Pool index + 1 must fit, and the all-ones value stays unused.
constexpr size_t kMaxPools = kPoolIndexMask - 1;
// A default-pool member index must fit in the 16-bit slot table.
constexpr size_t kMaxDefaultMembers = 65536;

inline uint64_t HashTeam(int64_t team_id) { return Mix64(static_cast<uint64_t>(team_id)); }

size_t CapacityFor(size_t count) {
  size_t capacity = 8;
  while (capacity < 2 * count) capacity *= 2;
  return capacity;
}

// Computes the precomputed routes of overrides, using the snapshot's
// placement tables exactly as Snapshot::RouteOf() does.
class EntryMaker {
 public:
  explicit EntryMaker(const Snapshot& snapshot) : snapshot_(snapshot) {
    tables_.reserve(snapshot.pools().size());
    for (const std::string& pool : snapshot.pools()) tables_.push_back(&snapshot.PoolTable(pool));
  }

  // The entry of the override at `i` in the snapshot's columns.
  RouteIndex::Entry Make(size_t i) const {
    RouteIndex::Entry e;
    e.team_id = snapshot_.team_ids()[i];
    const int32_t target = snapshot_.targets()[i];
    uint32_t pool_plus_one = 0;
    if (target > 0) {
      e.bucket_id = target;
    } else {
      const size_t pool = static_cast<size_t>(-static_cast<int64_t>(target) - 1);
      e.bucket_id = tables_[pool]->BucketForTeam(e.team_id);
      pool_plus_one = static_cast<uint32_t>(pool + 1);
    }
    uint32_t state = 0;
    if (e.bucket_id > 0) {
      // Snapshot::Build/Apply guarantee pins name existing buckets, and
      // placement only yields members of the pool.
      state = static_cast<uint32_t>(snapshot_.FindBucket(e.bucket_id)->state);
    }
    e.aux = pool_plus_one | (state << kPoolIndexBits);
    return e;
  }

 private:
  const Snapshot& snapshot_;
  std::vector<const PlacementTable*> tables_;
};

// Inserts or replaces `e`; the partition must have a free slot.
void Insert(std::vector<RouteIndex::Entry>& slots, size_t& size, const RouteIndex::Entry& e) {
  const uint64_t mask = slots.size() - 1;
  for (uint64_t i = HashTeam(e.team_id) & mask;; i = (i + 1) & mask) {
    if (slots[i].team_id == e.team_id) {
      slots[i] = e;
      return;
    }
    if (slots[i].team_id == 0) {
      slots[i] = e;
      ++size;
      return;
    }
  }
}

// Removes `team_id` if present, by backward-shift deletion: linear probing
// then needs no tombstones, so lookups of absent teams stay short.
void Erase(std::vector<RouteIndex::Entry>& slots, size_t& size, int64_t team_id) {
  const uint64_t mask = slots.size() - 1;
  uint64_t hole = HashTeam(team_id) & mask;
  for (;; hole = (hole + 1) & mask) {
    if (slots[hole].team_id == 0) return;
    if (slots[hole].team_id == team_id) break;
  }
  for (uint64_t j = (hole + 1) & mask; slots[j].team_id != 0; j = (j + 1) & mask) {
    const uint64_t home = HashTeam(slots[j].team_id) & mask;
    // The entry at j may fill the hole when the hole lies on its probe path
    // from `home` to j.
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      slots[hole] = slots[j];
      hole = j;
    }
  }
  slots[hole] = RouteIndex::Entry{};
  --size;
}

void Rehash(std::vector<RouteIndex::Entry>& slots, size_t capacity) {
  std::vector<RouteIndex::Entry> old(capacity);
  old.swap(slots);
  size_t size = 0;
  for (const RouteIndex::Entry& e : old) {
    if (e.team_id != 0) Insert(slots, size, e);
  }
}

}  // namespace

void RouteIndex::Publish(size_t i, std::shared_ptr<const Partition> partition) {
  refs_[i] = PartitionRef{partition->slots.data(), partition->slots.size() - 1};
  partitions_[i] = std::move(partition);
}

absl::StatusOr<std::unique_ptr<const RouteIndex>> RouteIndex::Build(const Snapshot& snapshot) {
  if (snapshot.pools().size() > kMaxPools) {
    return absl::ResourceExhaustedError(absl::StrCat("snapshot.pools: ", snapshot.pools().size(),
                                                     " pools; the client supports ", kMaxPools));
  }
  std::unique_ptr<RouteIndex> index(new RouteIndex());
  index->version_ = snapshot.version();

  // Overrides.
  const size_t n = snapshot.assignment_count();
  int bits = 0;
  while (bits < 16 && (n >> bits) > kTargetPartitionSize) ++bits;
  const size_t count = size_t{1} << bits;
  index->partition_mask_ = count - 1;
  std::vector<size_t> sizes(count, 0);
  for (int64_t team : snapshot.team_ids()) ++sizes[(HashTeam(team) >> 32) & index->partition_mask_];
  std::vector<std::shared_ptr<Partition>> parts(count);
  for (size_t p = 0; p < count; ++p) {
    parts[p] = std::make_shared<Partition>();
    parts[p]->slots.resize(CapacityFor(sizes[p]));
  }
  EntryMaker maker(snapshot);
  for (size_t i = 0; i < n; ++i) {
    const Entry e = maker.Make(i);
    Partition& part = *parts[(HashTeam(e.team_id) >> 32) & index->partition_mask_];
    Insert(part.slots, part.size, e);
  }
  index->refs_.resize(count);
  index->partitions_.resize(count);
  for (size_t p = 0; p < count; ++p) index->Publish(p, std::move(parts[p]));
  index->size_ = n;

  // Default placement.
  const auto& pools = snapshot.pools();
  index->default_pool_index_ = static_cast<int32_t>(
      std::lower_bound(pools.begin(), pools.end(), std::string(kDefaultPool)) - pools.begin());
  const PlacementTable& table = snapshot.PoolTable(kDefaultPool);
  if (!table.empty()) {
    const std::vector<PlacementMember>& members = table.members();  // ascending by id
    if (members.size() > kMaxDefaultMembers) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "snapshot.buckets: ", members.size(),
          " placeable buckets in the default pool; the client supports ", kMaxDefaultMembers));
    }
    for (const PlacementMember& m : members) {
      index->default_members_.push_back(
          Member{m.bucket_id, static_cast<uint8_t>(snapshot.FindBucket(m.bucket_id)->state)});
    }
    auto slots = std::make_shared<std::vector<uint16_t>>(kSlotCount);
    for (uint32_t s = 0; s < static_cast<uint32_t>(kSlotCount); ++s) {
      const int32_t id = table.BucketForSlot(s);
      const auto it =
          std::lower_bound(members.begin(), members.end(), id,
                           [](const PlacementMember& m, int32_t v) { return m.bucket_id < v; });
      (*slots)[s] = static_cast<uint16_t>(it - members.begin());
    }
    index->default_slots_raw_ = slots->data();
    index->default_slots_ = std::move(slots);
  }
  return std::unique_ptr<const RouteIndex>(std::move(index));
}

absl::StatusOr<std::unique_ptr<const RouteIndex>> RouteIndex::Update(
    const RouteIndex& previous, const Snapshot& snapshot, absl::Span<const int64_t> touched) {
  const size_t n = snapshot.assignment_count();
  const size_t count = previous.refs_.size();
  // Partitions sized for another order of magnitude: start over, so that
  // probes stay short and partitions stay cheap to copy.
  if (n > 4 * kTargetPartitionSize * count || (count > 1 && n * 4 < kTargetPartitionSize * count)) {
    return Build(snapshot);
  }
  std::unique_ptr<RouteIndex> index(new RouteIndex(previous));
  index->version_ = snapshot.version();

  // Copy-on-write: a partition is copied the first time a touched team
  // falls into it.
  std::vector<std::shared_ptr<Partition>> copies(count);
  EntryMaker maker(snapshot);
  const std::vector<int64_t>& ids = snapshot.team_ids();
  for (int64_t team : touched) {
    const size_t p = (HashTeam(team) >> 32) & index->partition_mask_;
    if (copies[p] == nullptr) copies[p] = std::make_shared<Partition>(*previous.partitions_[p]);
    Partition& part = *copies[p];
    const auto it = std::lower_bound(ids.begin(), ids.end(), team);
    if (it != ids.end() && *it == team) {
      if (2 * (part.size + 1) > part.slots.size()) Rehash(part.slots, 2 * part.slots.size());
      Insert(part.slots, part.size, maker.Make(static_cast<size_t>(it - ids.begin())));
    } else {
      Erase(part.slots, part.size, team);
    }
  }
  size_t size = 0;
  for (size_t p = 0; p < count; ++p) {
    if (copies[p] != nullptr) index->Publish(p, std::move(copies[p]));
    size += index->partitions_[p]->size;
  }
  index->size_ = size;
  return std::unique_ptr<const RouteIndex>(std::move(index));
}

RouteResult RouteIndex::Lookup(int64_t team_id) const {
  RouteResult r;
  r.version = version_;
  if (ABSL_PREDICT_FALSE(team_id < 1)) {
    r.status = RouteStatus::kInvalidTeam;
    return r;
  }
  const uint64_t h = HashTeam(team_id);
  const PartitionRef& part = refs_[(h >> 32) & partition_mask_];
  for (uint64_t i = h & part.mask;; i = (i + 1) & part.mask) {
    const Entry& e = part.slots[i];
    if (e.team_id == team_id) {
      const int32_t pool_index = static_cast<int32_t>(e.aux & kPoolIndexMask) - 1;
      r.bucket_id = e.bucket_id;
      r.pool_index = pool_index;
      r.source = pool_index < 0 ? RouteSource::kPin : RouteSource::kPool;
      if (e.bucket_id > 0) {
        r.bucket_state = static_cast<BucketState>(e.aux >> kPoolIndexBits);
        r.status = RouteStatus::kOk;
      } else {
        r.status = RouteStatus::kNoPlaceableBucket;
      }
      return r;
    }
    if (e.team_id == 0) break;
  }
  r.source = RouteSource::kDefault;
  r.pool_index = default_pool_index_;
  if (ABSL_PREDICT_FALSE(default_slots_raw_ == nullptr)) {
    r.status = RouteStatus::kNoPlaceableBucket;
    return r;
  }
  // Mix64(team_id) >> 48 is TeamSlot(team_id).
  const Member& m = default_members_[default_slots_raw_[h >> 48]];
  r.bucket_id = m.bucket_id;
  r.bucket_state = static_cast<BucketState>(m.state);
  r.status = RouteStatus::kOk;
  return r;
}

bool RouteIndex::TEST_SharesPartition(const RouteIndex& other, size_t i) const {
  return i < partitions_.size() && i < other.partitions_.size() &&
         partitions_[i] == other.partitions_[i];
}

}  // namespace client_internal
}  // namespace bucketmap
