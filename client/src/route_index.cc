#include "client/src/route_index.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace client_internal {
namespace {

// A default-pool member index must fit in the 16-bit slot table.
constexpr size_t kMaxDefaultMembers = 65536;

size_t PartitionOf(int64_t team_id, uint64_t partition_mask) {
  return static_cast<size_t>((HashTeam(team_id) >> 32) & partition_mask);
}

// Overrides up to which the table is kept at most a quarter full rather
// than half: 8 MiB of buckets, well inside this machine's L3. Route()
// branches once on "the team's bucket is full and does not hold it", and
// that branch depends on the cache miss, so each misprediction discards
// the lookups issued behind it. At a quarter full it is taken about a
// third as often (route_bench at 100k teams: 1.61-1.71x the bare map
// instead of 1.83-1.95x). Beyond, the table is DRAM-bound and its size
// costs more than the mispredictions (1M teams: 1.56x against 1.40-1.51x).
constexpr size_t kSparseOverrides = size_t{128} << 10;

// Buckets for `count` entries: a power of two with at most 1/2^load_shift
// of the entries used, so that a probe rarely goes past its first bucket.
size_t BucketsFor(size_t count, int load_shift) {
  size_t buckets = 1;
  while (buckets * 4 < (count << load_shift)) buckets *= 2;
  return buckets;
}

// Computes the routes of overrides, using the snapshot's placement tables
// exactly as Snapshot::RouteOf() does, and of the teams without one that
// need an entry, from the index's default slots.
class EntryMaker {
 public:
  EntryMaker(const Snapshot& snapshot, const HandoffSet& handoffs, const uint16_t* default_slots,
             const uint64_t* default_routes)
      : snapshot_(snapshot),
        handoffs_(handoffs),
        default_slots_(default_slots),
        default_routes_(default_routes) {
    tables_.reserve(snapshot.pools().size());
    for (const std::string& pool : snapshot.pools()) tables_.push_back(&snapshot.PoolTable(pool));
  }

  // The entry of `team`'s override, `target` in the snapshot's packed
  // column encoding.
  RouteIndex::Entry Make(int64_t team, int32_t target) const {
    int32_t bucket = target;
    int32_t pool = -1;
    RouteSource source = RouteSource::kPin;
    if (target < 0) {
      pool = static_cast<int32_t>(-static_cast<int64_t>(target) - 1);
      bucket = tables_[static_cast<size_t>(pool)]->BucketForTeam(team);
      source = RouteSource::kPool;
    }
    // Snapshot::Build/Apply guarantee that pins name existing buckets, and
    // placement only yields members of the pool.
    const BucketState state = bucket > 0 ? snapshot_.FindBucket(bucket)->state : BucketState{};
    const bool handoff =
        !handoffs_.empty() &&
        handoffs_.Involves(team, source == RouteSource::kPin,
                           pool < 0 ? std::string_view() : snapshot_.pools()[pool], bucket);
    return RouteIndex::Entry{team, RouteIndex::PackRoute(bucket, pool, state, source, handoff,
                                                         snapshot_.HasRules(team))};
  }

  // The entry of a team without an override that is listed in an open
  // handoff (`listed`: an unpin moved it to default placement) or has team
  // rules: its default route with those bits, which the default slots
  // cannot carry for it alone.
  RouteIndex::Entry MakeDefaultEntry(int64_t team, bool listed) const {
    uint64_t route = default_routes_[default_slots_[HashTeam(team) >> 48]];
    if (listed) route |= RouteIndex::kHandoffBit;
    if (snapshot_.HasRules(team)) route |= RouteIndex::kRulesBit;
    return RouteIndex::Entry{team, route};
  }

 private:
  const Snapshot& snapshot_;
  const HandoffSet& handoffs_;
  const uint16_t* const default_slots_;
  const uint64_t* const default_routes_;
  std::vector<const PlacementTable*> tables_;
};

// The teams of `snapshot` without an override that need an entry of their
// own: listed in an open handoff, or with team rules. Ascending, unique.
std::vector<int64_t> DefaultEntryTeams(const Snapshot& snapshot, const HandoffSet& handoffs) {
  std::vector<int64_t> teams;
  if (!handoffs.empty()) teams = handoffs.ListedTeams();
  for (const TeamRule& rule : snapshot.team_rules()) {
    if (teams.empty() || teams.back() != rule.team_id) teams.push_back(rule.team_id);
  }
  std::sort(teams.begin(), teams.end());
  teams.erase(std::unique(teams.begin(), teams.end()), teams.end());
  teams.erase(std::remove_if(teams.begin(), teams.end(),
                             [&snapshot](int64_t team) {
                               return snapshot.assignments().Find(team) != nullptr;
                             }),
              teams.end());
  return teams;
}

// The slot table shared by every index whose default pool has no
// placeable bucket: each slot names the one unroutable route.
const std::shared_ptr<const std::vector<uint16_t>>& ZeroSlots() {
  static const auto* const kZero = new std::shared_ptr<const std::vector<uint16_t>>(
      std::make_shared<const std::vector<uint16_t>>(kSlotCount, 0));
  return *kZero;
}

constexpr size_t kHugePage = size_t{2} << 20;
// Tables smaller than this are not repacked: in 4 KiB pages they stay
// within the L2 TLB's reach, and a repack copies the whole table on the
// writer (at 100k teams it came every two or three 16-team deltas and
// doubled a publication's cost, taking CPU from the readers).
constexpr size_t kRepackBytes = size_t{8} << 20;

// Zeroed memory for `count` buckets. A table of a megabyte or more is
// rounded up to whole 2 MiB pages and asks for transparent huge pages:
// at 1M teams the override table is 16 MiB, about the reach of the L2 TLB
// in 4 KiB pages, and Route() is a random probe into it, so with small
// pages most probes would add a page walk to their cache miss.
std::shared_ptr<RouteIndex::Bucket> AllocateBuckets(size_t count) {
  const size_t bytes = count * sizeof(RouteIndex::Bucket);
  const bool huge = bytes >= kHugePage / 2;
  const size_t size = huge ? (bytes + kHugePage - 1) / kHugePage * kHugePage : bytes;
  void* p = nullptr;
  if (posix_memalign(&p, huge ? kHugePage : alignof(RouteIndex::Bucket), size) != 0) {
    throw std::bad_alloc();
  }
  if (huge) madvise(p, size, MADV_HUGEPAGE);  // advice only: small pages still work
  std::memset(p, 0, bytes);
  return std::shared_ptr<RouteIndex::Bucket>(static_cast<RouteIndex::Bucket*>(p),
                                             [](RouteIndex::Bucket* b) { std::free(b); });
}

}  // namespace

std::shared_ptr<const RouteIndex::Partition> RouteIndex::BuildPartition(
    const std::vector<Entry>& entries, absl::Span<Bucket> buckets,
    std::shared_ptr<const void> storage) {
  auto part = std::make_shared<Partition>();
  const uint64_t mask = buckets.size() - 1;
  for (const Entry& e : entries) {
    for (uint64_t b = HashTeam(e.team_id) & mask;; b = (b + 1) & mask) {
      Entry* slots = buckets[b].entries;
      Entry* free = std::find_if(slots, slots + 4, [](const Entry& x) { return x.team_id == 0; });
      if (free != slots + 4) {
        *free = e;
        break;
      }
    }
  }
  part->buckets = buckets;
  part->size = entries.size();
  part->storage = std::move(storage);
  return part;
}

// Update() gives each rebuilt partition its own small allocation, so after
// many deltas the table is scattered over small pages again. Once more
// than half the partitions have left the last slab, and the table is big
// enough for huge pages to matter, copy them all into a new one: one
// memcpy of the table every count/2 partition rebuilds or more.
void RouteIndex::MaybeRepack() {
  size_t total = 0, outside = 0;
  for (const auto& part : partitions_) {
    total += part->buckets.size();
    if (part->storage != slab_) ++outside;
  }
  if (total * sizeof(Bucket) < kRepackBytes || outside * 2 <= partitions_.size()) return;
  std::shared_ptr<Bucket> slab = AllocateBuckets(total);
  Bucket* next = slab.get();
  for (size_t i = 0; i < partitions_.size(); ++i) {
    // Publish() may free the old partition (one rebuilt by this Update()).
    const std::shared_ptr<const Partition> old = partitions_[i];
    const size_t buckets = old->buckets.size();
    std::memcpy(static_cast<void*>(next), old->buckets.data(), buckets * sizeof(Bucket));
    auto part = std::make_shared<Partition>();
    part->buckets = absl::Span<const Bucket>(next, buckets);
    part->size = old->size;
    part->storage = slab;
    Publish(i, std::move(part));
    next += buckets;
  }
  slab_ = std::move(slab);
}

void RouteIndex::Publish(size_t i, std::shared_ptr<const Partition> partition) {
  refs_[i] = PartitionRef{partition->buckets.data(), partition->buckets.size() - 1};
  partitions_[i] = std::move(partition);
}

void RouteIndex::Seal() {
  table_.version = version_;
  table_.partition_mask = partition_mask_;
  table_.partitions = refs_.data();
  table_.default_slots = default_slots_->data();
  table_.default_routes = default_routes_->data();
}

absl::StatusOr<std::unique_ptr<const RouteIndex>> RouteIndex::Build(const Snapshot& snapshot,
                                                                    const HandoffSet& handoffs) {
  const auto& pools = snapshot.pools();
  if (pools.size() > kMaxPools) {
    return absl::ResourceExhaustedError(
        absl::StrCat("snapshot.pools: ", pools.size(), " pools; the client supports ", kMaxPools));
  }
  std::unique_ptr<RouteIndex> index(new RouteIndex());
  index->version_ = snapshot.version();

  // Default placement.
  const int32_t default_pool = static_cast<int32_t>(
      std::lower_bound(pools.begin(), pools.end(), std::string(kDefaultPool)) - pools.begin());
  const PlacementTable& table = snapshot.PoolTable(kDefaultPool);
  auto routes = std::make_shared<std::vector<uint64_t>>();
  if (table.empty()) {
    routes->push_back(RouteIndex::PackRoute(0, default_pool, BucketState{}, RouteSource::kDefault));
    index->default_slots_ = ZeroSlots();
  } else {
    const std::vector<PlacementMember>& members = table.members();  // ascending by id
    if (members.size() > kMaxDefaultMembers) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "snapshot.buckets: ", members.size(),
          " placeable buckets in the default pool; the client supports ", kMaxDefaultMembers));
    }
    for (const PlacementMember& m : members) {
      routes->push_back(RouteIndex::PackRoute(m.bucket_id, default_pool,
                                              snapshot.FindBucket(m.bucket_id)->state,
                                              RouteSource::kDefault));
    }
    // Index of each member's route with the handoff bit, added on first
    // use; -1 until then.
    std::vector<int32_t> moving(members.size(), -1);
    const bool pool_handoffs = handoffs.has_pool_handoffs();
    auto slots = std::make_shared<std::vector<uint16_t>>(kSlotCount);
    for (uint32_t s = 0; s < static_cast<uint32_t>(kSlotCount); ++s) {
      const int32_t id = table.BucketForSlot(s);
      const auto it =
          std::lower_bound(members.begin(), members.end(), id,
                           [](const PlacementMember& m, int32_t v) { return m.bucket_id < v; });
      size_t route = static_cast<size_t>(it - members.begin());
      if (pool_handoffs && handoffs.SlotMoved(kDefaultPool, s, id)) {
        if (moving[route] < 0) {
          if (routes->size() >= kMaxDefaultMembers) {
            return absl::ResourceExhaustedError(absl::StrCat(
                "snapshot.buckets: ", members.size(),
                " placeable buckets in the default pool, with a handoff; the client supports ",
                kMaxDefaultMembers / 2));
          }
          moving[route] = static_cast<int32_t>(routes->size());
          routes->push_back((*routes)[route] | (uint64_t{1} << RouteResult::kHandoffShift));
        }
        route = static_cast<size_t>(moving[route]);
      }
      (*slots)[s] = static_cast<uint16_t>(route);
    }
    index->default_slots_ = std::move(slots);
  }
  index->default_routes_ = std::move(routes);

  // Overrides.
  const size_t n = snapshot.assignment_count();
  int bits = 0;
  while (bits < 16 && (n >> bits) > kTargetPartitionSize) ++bits;
  const size_t count = size_t{1} << bits;
  index->partition_mask_ = count - 1;
  std::vector<std::vector<Entry>> grouped(count);
  for (auto& g : grouped) g.reserve(n / count + n / count / 4 + 4);
  EntryMaker maker(snapshot, handoffs, index->default_slots_->data(),
                   index->default_routes_->data());
  snapshot.assignments().ForEach([&](int64_t team, int32_t target) {
    const Entry e = maker.Make(team, target);
    grouped[PartitionOf(e.team_id, index->partition_mask_)].push_back(e);
  });
  const std::vector<int64_t> synthetic = DefaultEntryTeams(snapshot, handoffs);
  if (!synthetic.empty()) {
    const std::vector<int64_t> listed =
        handoffs.empty() ? std::vector<int64_t>() : handoffs.ListedTeams();
    for (int64_t team : synthetic) {
      const bool is_listed = std::binary_search(listed.begin(), listed.end(), team);
      grouped[PartitionOf(team, index->partition_mask_)].push_back(
          maker.MakeDefaultEntry(team, is_listed));
    }
  }
  index->refs_.resize(count);
  index->partitions_.resize(count);
  // One slab for every partition, in order.
  size_t total = 0;
  index->load_shift_ = n <= kSparseOverrides ? 2 : 1;
  for (const auto& g : grouped) total += BucketsFor(g.size(), index->load_shift_);
  std::shared_ptr<Bucket> slab = AllocateBuckets(total);
  Bucket* next = slab.get();
  for (size_t p = 0; p < count; ++p) {
    const size_t buckets = BucketsFor(grouped[p].size(), index->load_shift_);
    index->Publish(p, BuildPartition(grouped[p], absl::Span<Bucket>(next, buckets), slab));
    next += buckets;
  }
  index->slab_ = std::move(slab);
  index->size_ = n + synthetic.size();

  index->Seal();
  return std::unique_ptr<const RouteIndex>(std::move(index));
}

absl::StatusOr<std::unique_ptr<const RouteIndex>> RouteIndex::Update(
    const RouteIndex& previous, const Snapshot& snapshot, const HandoffSet& handoffs,
    absl::Span<const int64_t> touched) {
  const size_t n = snapshot.assignment_count();
  const size_t count = previous.refs_.size();
  // Partitions sized for another order of magnitude: start over, so that
  // partitions stay cheap to rebuild.
  if (n > 4 * kTargetPartitionSize * count || (count > 1 && n * 4 < kTargetPartitionSize * count)) {
    return Build(snapshot, handoffs);
  }
  // Everything it points into (partitions, default tables) is shared.
  std::unique_ptr<RouteIndex> index(new RouteIndex(previous));
  index->version_ = snapshot.version();

  // Group the touched teams by partition; each touched partition is
  // rebuilt from its untouched entries plus the touched teams' new ones.
  std::vector<std::pair<size_t, int64_t>> by_partition;
  by_partition.reserve(touched.size());
  for (int64_t team : touched) {
    by_partition.emplace_back(PartitionOf(team, index->partition_mask_), team);
  }
  std::sort(by_partition.begin(), by_partition.end());
  EntryMaker maker(snapshot, handoffs, index->default_slots_->data(),
                   index->default_routes_->data());
  const std::vector<int64_t> listed =
      handoffs.empty() ? std::vector<int64_t>() : handoffs.ListedTeams();
  auto listed_now = [&listed](int64_t team) {
    return std::binary_search(listed.begin(), listed.end(), team);
  };
  std::vector<Entry> entries;
  for (size_t i = 0; i < by_partition.size();) {
    const size_t p = by_partition[i].first;
    size_t j = i;
    while (j < by_partition.size() && by_partition[j].first == p) ++j;
    // by_partition[i, j) are this partition's touched teams, ascending.
    auto is_touched = [&](int64_t team) {
      return std::binary_search(by_partition.begin() + i, by_partition.begin() + j,
                                std::make_pair(p, team));
    };
    entries.clear();
    for (const Bucket& bucket : previous.partitions_[p]->buckets) {
      for (const Entry& e : bucket.entries) {
        if (e.team_id != 0 && !is_touched(e.team_id)) entries.push_back(e);
      }
    }
    for (size_t k = i; k < j; ++k) {
      const int64_t team = by_partition[k].second;
      if (const int32_t* target = snapshot.assignments().Find(team)) {
        entries.push_back(maker.Make(team, *target));
      } else if (listed_now(team) || snapshot.HasRules(team)) {
        entries.push_back(maker.MakeDefaultEntry(team, listed_now(team)));
      }
    }
    const size_t buckets = BucketsFor(entries.size(), index->load_shift_);
    std::shared_ptr<Bucket> storage = AllocateBuckets(buckets);
    index->Publish(p, BuildPartition(entries, absl::Span<Bucket>(storage.get(), buckets), storage));
    i = j;
  }
  size_t size = 0;
  for (const auto& part : index->partitions_) size += part->size;
  index->size_ = size;
  index->MaybeRepack();
  index->Seal();
  return std::unique_ptr<const RouteIndex>(std::move(index));
}

bool RouteIndex::TEST_SharesPartition(const RouteIndex& other, size_t i) const {
  return i < partitions_.size() && i < other.partitions_.size() &&
         partitions_[i] == other.partitions_[i];
}

}  // namespace client_internal
}  // namespace bucketmap
