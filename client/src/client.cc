#include "bucketmap/client.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/src/cache_file.h"
#include "client/src/epoch.h"
#include "client/src/event_rules.h"
#include "client/src/handoff_set.h"
#include "client/src/route_index.h"
#include "client/src/tsan.h"
#include "codec/codec.h"
#include "domain/status_macros.h"
#include "spdlog/spdlog.h"

namespace bucketmap {
namespace client_internal {

// What the published pointer points to: a copy of the view's lookup table
// (so Route() goes from the pointer straight to the table, one load fewer
// than through the view and its index), and one reference to the view. The
// view itself may outlive this node through handles taken with Current().
struct PublishedView : RouteTable {
  PublishedView(const RouteTable& table, std::shared_ptr<const MappingView> v)
      : RouteTable(table), view(std::move(v)) {}
  std::shared_ptr<const MappingView> view;
};

namespace {

const PublishedView* AsNode(const RouteTable* table) {
  return static_cast<const PublishedView*>(table);
}

// Runs once no reader can still hold `node`.
void ReclaimPublishedView(void* node) { delete static_cast<PublishedView*>(node); }

void RetireNode(const void* owner, const RouteTable* table) {
  Retire(owner, const_cast<PublishedView*>(AsNode(table)), &ReclaimPublishedView);
}

}  // namespace
}  // namespace client_internal

namespace {

using client_internal::AsNode;
using client_internal::EpochReadSection;
using client_internal::EventRules;
using client_internal::HandoffSet;
using client_internal::PublishedView;
using client_internal::RouteIndex;
using client_internal::RouteTable;

constexpr int64_t kNever = std::numeric_limits<int64_t>::min();

ClientOptions WithDefaults(ClientOptions options) {
  if (!options.clock) options.clock = [] { return absl::Now(); };
  return options;
}

// Snapshot::Build/Apply name the field relative to the mapping; say which
// message it came from.
absl::Status Prefixed(const absl::Status& status, const std::string& prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

}  // namespace

// ---- MappingView ----

MappingView::MappingView(std::shared_ptr<const Snapshot> snapshot,
                         std::shared_ptr<const client_internal::HandoffSet> handoffs,
                         std::unique_ptr<const client_internal::RouteIndex> index,
                         std::shared_ptr<const client_internal::EventRules> event_rules,
                         const std::string& event_role)
    : snapshot_(std::move(snapshot)),
      handoffs_(std::move(handoffs)),
      index_(std::move(index)),
      table_(&index_->table()),
      event_rules_(std::move(event_rules)) {
  // The server assigns bucket ids 1, 2, ...: a table by id. A snapshot
  // whose ids are far sparser (malformed, or a hostile server's: one
  // bucket with id 2^31 - 1 would ask for 32 GiB) gets a sorted list
  // instead, searched only for its buckets.
  const std::vector<Bucket>& buckets = snapshot_->buckets();  // ascending by id
  const int64_t max_id = buckets.empty() ? 0 : buckets.back().id;
  const bool dense = max_id <= 2 * static_cast<int64_t>(buckets.size()) + 1024;
  const size_t size = dense && max_id > 0 ? static_cast<size_t>(max_id) + 1 : 1;
  event_topics_.assign(size, nullptr);
  overflow_topics_.assign(size, nullptr);
  for (const Bucket& b : buckets) {
    if (b.id < 1) continue;  // never a route's bucket
    const std::string* event = nullptr;
    const std::string* overflow = nullptr;
    if (auto it = b.topics.find(event_role); it != b.topics.end()) event = &it->second;
    if (auto it = b.topics.find(kOverflowRole); it != b.topics.end()) overflow = &it->second;
    if (dense) {
      event_topics_[static_cast<size_t>(b.id)] = event;
      overflow_topics_[static_cast<size_t>(b.id)] = overflow;
    } else {
      sparse_topics_.push_back(SparseTopics{b.id, event, overflow});
    }
  }
}

const std::string* MappingView::SparseTopic(size_t bucket, bool overflow) const {
  auto it = std::lower_bound(
      sparse_topics_.begin(), sparse_topics_.end(), bucket,
      [](const SparseTopics& t, size_t id) { return static_cast<size_t>(t.id) < id; });
  if (it == sparse_topics_.end() || static_cast<size_t>(it->id) != bucket) return nullptr;
  return overflow ? it->overflow : it->event;
}

MappingView::~MappingView() = default;

RouteResult MappingView::Route(int64_t team_id) const { return index_->Lookup(team_id); }

const std::string* MappingView::Topic(int32_t bucket_id, std::string_view role) const {
  const Bucket* bucket = FindBucket(bucket_id);
  if (bucket == nullptr) return nullptr;
  // A handful of roles; a scan avoids building a std::string key.
  for (const auto& [r, topic] : bucket->topics) {
    if (r == role) return &topic;
  }
  return nullptr;
}

std::string_view MappingView::PoolName(int32_t index) const {
  const auto& pools = snapshot_->pools();
  if (index < 0 || static_cast<size_t>(index) >= pools.size()) return {};
  return pools[static_cast<size_t>(index)];
}

std::vector<int64_t> MappingView::TeamsInBucket(int32_t bucket_id) const {
  std::vector<const PlacementTable*> tables;
  tables.reserve(snapshot_->pools().size());
  for (const std::string& pool : snapshot_->pools()) tables.push_back(&snapshot_->PoolTable(pool));
  std::vector<int64_t> teams;
  snapshot_->assignments().ForEach([&](int64_t team, int32_t t) {
    const int32_t bucket =
        t > 0 ? t : tables[static_cast<size_t>(-static_cast<int64_t>(t) - 1)]->BucketForTeam(team);
    if (bucket == bucket_id) teams.push_back(team);
  });
  return teams;
}

EventRoute MappingView::RouteEventWithRules(RouteResult route, int64_t team_id,
                                            std::string_view key, absl::Time now) const {
  const size_t bucket = static_cast<uint32_t>(route.bucket_id());
  const std::string* main =
      bucket < event_topics_.size() ? event_topics_[bucket] : SparseTopic(bucket, false);
  const client_internal::TeamEventRules* rules = event_rules_->Find(team_id);
  if (rules == nullptr) return EventRoute(route, main, 0);
  const uint8_t skip = rules->skip_person_processing ? EventRoute::kSkipPersonProcessing : 0;
  if (!route.routable()) return EventRoute(route, nullptr, skip);
  if (rules->drop) return EventRoute(route, nullptr, EventRoute::kDropped | skip);
  // The server refuses overflow rules for buckets without an overflow
  // topic; if one still has none here, the event stays on the main topic.
  const std::string* overflow =
      bucket < overflow_topics_.size() ? overflow_topics_[bucket] : SparseTopic(bucket, true);
  if (overflow == nullptr) return EventRoute(route, main, skip);
  const EventRoute overflowed(route, overflow, EventRoute::kOverflowed | skip);
  if (rules->force_overflow) return overflowed;
  client_internal::TeamLimiter* limiter = rules->limiter.get();
  if (limiter == nullptr) return EventRoute(route, main, skip);
  const int64_t now_ns = absl::ToUnixNanos(now);
  if (limiter->team_sticky_until() > now_ns) return overflowed;
  client_internal::StickySet* sticky = event_rules_->sticky();
  const uint64_t hash = client_internal::StickyHash(team_id, key);
  if (sticky->Contains(hash, now)) return overflowed;
  if (limiter->TryAcquire(now_ns)) return EventRoute(route, main, skip);
  const absl::Time until = now + event_rules_->sticky_window();
  if (!sticky->Mark(hash, now, until)) {
    // No room for the key: the whole team overflows for one window, so no
    // key goes back to the main topic inside it.
    limiter->StickTeamUntil(absl::ToUnixNanos(until));
  }
  return overflowed;
}

bool MappingView::Owns(int32_t bucket_id, int64_t team_id) const {
  const RouteResult r = Route(team_id);
  return r.routable() && r.bucket_id() == bucket_id;
}

HandoffStatus MappingView::HandoffState(int64_t team_id) const {
  HandoffStatus status;
  status.version = version();
  if (handoffs_->empty() || team_id < 1) return status;
  const RouteResult r = Route(team_id);
  handoffs_->Find(team_id, r.source() == RouteSource::kPin, PoolName(r.pool_index()), r.bucket_id(),
                  &status.handoffs);
  return status;
}

std::vector<const v1::Handoff*> MappingView::OpenHandoffs() const {
  std::vector<const v1::Handoff*> out;
  out.reserve(handoffs_->entries().size());
  for (const auto& e : handoffs_->entries()) out.push_back(&e->handoff);
  return out;
}

// ---- Client: reads ----

Client::Client(ClientOptions options)
    : options_(WithDefaults(std::move(options))), confirmed_at_ns_(kNever) {}

Client::~Client() {
  {
    client_internal::MutexLock lock(&apply_mu_);
    const RouteTable* old = current_.exchange(nullptr, std::memory_order_acq_rel);
    if (old != nullptr) client_internal::RetireNode(this, old);
  }
  // Every view this client retired is freed before the client is gone.
  client_internal::WaitForReclaim(this);
}

absl::Time Client::Now() const { return options_.clock(); }

RouteResult Client::RouteSlow(int64_t team_id) const {
  EpochReadSection section;
  const RouteTable* table = current_.load(std::memory_order_acquire);
  return table == nullptr ? RouteResult() : table->Lookup(team_id);
}

std::shared_ptr<const MappingView> Client::Current() const {
  EpochReadSection section;
  const RouteTable* table = current_.load(std::memory_order_acquire);
  return table == nullptr ? nullptr : AsNode(table)->view;
}

std::shared_ptr<const MappingView> Client::CurrentForWriter() const {
  // Only writers, serialized by apply_mu_, replace or retire the node.
  const RouteTable* table = current_.load(std::memory_order_relaxed);
  return table == nullptr ? nullptr : AsNode(table)->view;
}

std::string Client::cluster_id() const {
  std::shared_ptr<const MappingView> view = Current();
  return view == nullptr ? std::string() : view->cluster_id();
}

std::optional<BucketState> Client::GetBucketState(int32_t bucket_id) const {
  EpochReadSection section;
  const RouteTable* table = current_.load(std::memory_order_acquire);
  if (table == nullptr) return std::nullopt;
  const Bucket* bucket = AsNode(table)->view->FindBucket(bucket_id);
  if (bucket == nullptr) return std::nullopt;
  return bucket->state;
}

bool Client::Owns(int32_t bucket_id, int64_t team_id) const {
  const RouteResult r = Route(team_id);
  return r.routable() && r.bucket_id() == bucket_id;
}

std::vector<int64_t> Client::TeamsInBucket(int32_t bucket_id) const {
  std::shared_ptr<const MappingView> view = Current();
  return view == nullptr ? std::vector<int64_t>() : view->TeamsInBucket(bucket_id);
}

HandoffStatus Client::HandoffState(int64_t team_id) const {
  std::shared_ptr<const MappingView> view = Current();
  return view == nullptr ? HandoffStatus() : view->HandoffState(team_id);
}

Client::ListenerId Client::OnHandoffDone(int64_t team_id,
                                         std::function<void(const HandoffEnd&)> done) {
  // Under handoff_mu_: a publication either replaced the view before we
  // read it, or runs the callbacks (under the same lock) after we register.
  client_internal::MutexLock lock(&handoff_mu_);
  const std::shared_ptr<const MappingView> view = Current();
  if (view == nullptr) return 0;
  const HandoffStatus status = view->HandoffState(team_id);
  if (!status.open()) return 0;
  HandoffWaiter waiter;
  {
    client_internal::MutexLock ids(&listeners_mu_);
    waiter.id = next_listener_id_++;
  }
  waiter.team_id = team_id;
  waiter.done = std::move(done);
  for (const TeamHandoff& h : status.handoffs) waiter.handoff_ids.push_back(h.handoff_id);
  handoff_waiters_.push_back(std::move(waiter));
  return handoff_waiters_.back().id;
}

void Client::RemoveHandoffCallback(ListenerId id) {
  client_internal::MutexLock lock(&handoff_mu_);
  handoff_waiters_.erase(std::remove_if(handoff_waiters_.begin(), handoff_waiters_.end(),
                                        [id](const HandoffWaiter& w) { return w.id == id; }),
                         handoff_waiters_.end());
}

void Client::RunHandoffCallbacks(const MappingView& view, const std::vector<v1::Handoff>& ended) {
  std::vector<HandoffWaiter> done;
  {
    client_internal::MutexLock lock(&handoff_mu_);
    if (handoff_waiters_.empty()) return;
    for (auto it = handoff_waiters_.begin(); it != handoff_waiters_.end();) {
      HandoffWaiter& w = *it;
      for (const v1::Handoff& h : ended) {
        if (std::find(w.handoff_ids.begin(), w.handoff_ids.end(), h.id()) == w.handoff_ids.end()) {
          continue;
        }
        w.last_end.handoff_id = h.id();
        w.last_end.end_state = h.state();
        w.last_end.end_reason = h.end_reason();
        w.last_end.missing_producers.assign(h.missing_producers().begin(),
                                            h.missing_producers().end());
      }
      const HandoffStatus status = view.HandoffState(w.team_id);
      if (status.open()) {
        for (const TeamHandoff& h : status.handoffs) {
          if (std::find(w.handoff_ids.begin(), w.handoff_ids.end(), h.handoff_id) ==
              w.handoff_ids.end()) {
            w.handoff_ids.push_back(h.handoff_id);
          }
        }
        ++it;
        continue;
      }
      w.last_end.team_id = w.team_id;
      w.last_end.version = view.version();
      if (w.last_end.handoff_id == 0) {
        // Ended unseen (a snapshot no longer lists it, or a reset).
        w.last_end.handoff_id = *std::max_element(w.handoff_ids.begin(), w.handoff_ids.end());
      }
      done.push_back(std::move(w));
      it = handoff_waiters_.erase(it);
    }
  }
  for (const HandoffWaiter& w : done) w.done(w.last_end);
}

absl::Duration Client::Staleness() const {
  const int64_t ns = confirmed_at_ns_.load(std::memory_order_acquire);
  if (ns == kNever) return absl::InfiniteDuration();
  return std::max(absl::ZeroDuration(), Now() - absl::FromUnixNanos(ns));
}

bool Client::WaitForVersion(int64_t version, absl::Duration timeout) const {
  if (this->version() >= version) return true;
  const absl::Time deadline = absl::Now() + timeout;
  client_internal::MutexLock lock(&version_mu_);
  while (this->version() < version) {
    if (client_internal::WaitWithDeadline(&version_cv_, &version_mu_, deadline)) break;
  }
  return this->version() >= version;
}

Client::ListenerId Client::OnChange(std::function<void(const ChangeEvent&)> listener) {
  client_internal::MutexLock lock(&listeners_mu_);
  const ListenerId id = next_listener_id_++;
  listeners_.emplace_back(
      id, std::make_shared<const std::function<void(const ChangeEvent&)>>(std::move(listener)));
  return id;
}

void Client::RemoveListener(ListenerId id) {
  client_internal::MutexLock lock(&listeners_mu_);
  listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(),
                                  [id](const auto& entry) { return entry.first == id; }),
                   listeners_.end());
}

Client::ListenerId Client::OnBucketState(int32_t bucket_id,
                                         std::function<void(const BucketStateChange&)> listener) {
  auto shared =
      std::make_shared<const std::function<void(const BucketStateChange&)>>(std::move(listener));
  ListenerId id;
  {
    client_internal::MutexLock lock(&listeners_mu_);
    id = next_listener_id_++;
  }
  BucketStateChange now;
  bool tell = false;
  {
    // Under bucket_mu_: a publication either replaced the view before we
    // read it, or tells this listener (under the same lock) afterwards.
    client_internal::MutexLock lock(&bucket_mu_);
    BucketListener entry{id, bucket_id, shared, std::nullopt, false};
    if (const std::shared_ptr<const MappingView> view = Current()) {
      now.bucket_id = bucket_id;
      now.version = view->version();
      if (const Bucket* b = view->FindBucket(bucket_id)) now.state = b->state;
      entry.last = now.state;
      entry.told = true;
      tell = true;
    }
    bucket_listeners_.push_back(std::move(entry));
  }
  if (tell) (*shared)(now);
  return id;
}

void Client::RemoveBucketStateListener(ListenerId id) {
  client_internal::MutexLock lock(&bucket_mu_);
  bucket_listeners_.erase(std::remove_if(bucket_listeners_.begin(), bucket_listeners_.end(),
                                         [id](const BucketListener& l) { return l.id == id; }),
                          bucket_listeners_.end());
}

void Client::RunBucketStateListeners(const MappingView& view) {
  std::vector<std::pair<std::shared_ptr<const std::function<void(const BucketStateChange&)>>,
                        BucketStateChange>>
      calls;
  {
    client_internal::MutexLock lock(&bucket_mu_);
    for (BucketListener& l : bucket_listeners_) {
      BucketStateChange change;
      change.bucket_id = l.bucket_id;
      change.version = view.version();
      if (const Bucket* b = view.FindBucket(l.bucket_id)) change.state = b->state;
      if (l.told && change.state == l.last) continue;
      l.last = change.state;
      l.told = true;
      calls.emplace_back(l.listener, change);
    }
  }
  for (const auto& [listener, change] : calls) (*listener)(change);
}

// ---- Client: updates ----

std::shared_ptr<const MappingView> Client::MakeView(std::shared_ptr<const Snapshot> snapshot,
                                                    std::shared_ptr<const HandoffSet> handoffs,
                                                    std::unique_ptr<const RouteIndex> index) {
  std::shared_ptr<const EventRules> rules =
      EventRules::Build(*snapshot, options_.rate_limit_share, options_.overflow_sticky_window,
                        options_.overflow_sticky_capacity, &limiters_, &sticky_);
  return std::shared_ptr<const MappingView>(new MappingView(std::move(snapshot),
                                                            std::move(handoffs), std::move(index),
                                                            std::move(rules), options_.event_role));
}

void Client::Publish(std::shared_ptr<const MappingView> view, bool reset, absl::Time confirmed_at,
                     const std::vector<v1::Handoff>& ended) {
  const int64_t old_version = version_.load(std::memory_order_relaxed);
  const int64_t new_version = view->version();
  const MappingView* raw = view.get();
  const RouteTable& table = view->index_->table();
  auto* node = new PublishedView(table, std::move(view));
  // The release half publishes everything written while building the view.
  const RouteTable* old = current_.exchange(node, std::memory_order_acq_rel);
  {
    // Under version_mu_, so a waiter either sees the new version before it
    // waits or is already waiting when signalled.
    client_internal::MutexLock lock(&version_mu_);
    version_.store(new_version, std::memory_order_release);
  }
  version_cv_.SignalAll();
  confirmed_at_ns_.store(absl::ToUnixNanos(confirmed_at), std::memory_order_release);
  if (old != nullptr) client_internal::RetireNode(this, old);
  // Frees the views of earlier publications (this one's is usually still
  // being read); never waits for readers.
  client_internal::Reclaim();

  std::vector<std::shared_ptr<const std::function<void(const ChangeEvent&)>>> listeners;
  {
    client_internal::MutexLock lock(&listeners_mu_);
    listeners.reserve(listeners_.size());
    for (const auto& entry : listeners_) listeners.push_back(entry.second);
  }
  const ChangeEvent event{old_version, new_version, reset, raw};
  for (const auto& listener : listeners) (*listener)(event);
  RunHandoffCallbacks(*raw, ended);
  RunBucketStateListeners(*raw);
}

absl::Status Client::ApplySnapshot(const v1::MappingSnapshot& snapshot) {
  // Decoding and indexing happen before the lock: they are the expensive
  // part, and touch nothing shared.
  ASSIGN_OR_RETURN(MappingState state, StateFromProto(snapshot));
  absl::StatusOr<std::shared_ptr<const Snapshot>> built = Snapshot::Build(std::move(state));
  if (!built.ok()) return Prefixed(built.status(), "snapshot.");
  std::shared_ptr<const Snapshot> domain = *std::move(built);
  ASSIGN_OR_RETURN(std::shared_ptr<const HandoffSet> handoffs,
                   HandoffSet::Build(snapshot.handoffs(), "snapshot.handoffs"));
  ASSIGN_OR_RETURN(std::unique_ptr<const RouteIndex> index, RouteIndex::Build(*domain, *handoffs));

  client_internal::MutexLock lock(&apply_mu_);
  const std::shared_ptr<const MappingView> current = CurrentForWriter();
  const bool reset = current != nullptr && current->cluster_id() != domain->cluster_id();
  if (current != nullptr && !reset && domain->version() < current->version()) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot.version: ", domain->version(),
                                                      " is older than the applied version ",
                                                      current->version()));
  }
  if (reset) {
    spdlog::warn(
        "bucketmap client: cluster_id changed from {} to {}; dropping the mapping at version {} "
        "and taking the snapshot at version {}",
        current->cluster_id(), domain->cluster_id(), current->version(), domain->version());
  }
  Publish(MakeView(std::move(domain), std::move(handoffs), std::move(index)), reset, Now());
  return absl::OkStatus();
}

absl::Status Client::ApplyDeltas(absl::Span<const v1::MappingDelta> deltas) {
  std::vector<const v1::MappingDelta*> list;
  list.reserve(deltas.size());
  for (const v1::MappingDelta& d : deltas) list.push_back(&d);
  return ApplyDeltaList(list);
}

absl::Status Client::ApplyDeltas(
    const google::protobuf::RepeatedPtrField<v1::MappingDelta>& deltas) {
  std::vector<const v1::MappingDelta*> list;
  list.reserve(deltas.size());
  for (const v1::MappingDelta& d : deltas) list.push_back(&d);
  return ApplyDeltaList(list);
}

absl::Status Client::ApplyDeltaList(const std::vector<const v1::MappingDelta*>& deltas) {
  if (deltas.empty()) return absl::OkStatus();
  client_internal::MutexLock lock(&apply_mu_);
  const std::shared_ptr<const MappingView> current = CurrentForWriter();
  if (current == nullptr) {
    return absl::FailedPreconditionError(
        "deltas: no mapping is loaded; a snapshot must come first");
  }
  if (deltas[0]->from_version() != current->version()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "deltas[0].from_version: ", deltas[0]->from_version(), ", but the client is at version ",
        current->version(), "; resync with a snapshot"));
  }

  std::shared_ptr<const Snapshot> snapshot(current->snapshot_);
  std::shared_ptr<const HandoffSet> handoffs(current->handoffs_);
  std::vector<v1::Handoff> ended;
  // Bucket changes can move any override's precomputed route (a state, a
  // weight, a pool's membership); they rebuild the index. Assignment-only
  // deltas update just the touched teams, and so do handoffs that list
  // their teams; a pool-based handoff that opens or ends flips the bit of
  // default slots and rebuilds.
  bool rebuild = false;
  std::vector<int64_t> touched;
  for (size_t i = 0; i < deltas.size(); ++i) {
    const v1::MappingDelta& d = *deltas[i];
    const std::string field = absl::StrCat("deltas[", i, "]");
    if (d.from_version() != snapshot->version()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".from_version: ", d.from_version(),
                                                     " does not follow version ",
                                                     snapshot->version()));
    }
    if (d.to_version() != d.from_version() + 1) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".to_version: ", d.to_version(),
                                                     "; a delta spans one version, from ",
                                                     d.from_version()));
    }
    ASSIGN_OR_RETURN(Change change, ChangeFromProto(d, field));
    // The client keeps handoffs as their wire form, in its HandoffSet
    // (below), not in the domain snapshot.
    change.handoffs.clear();
    rebuild = rebuild || !change.buckets.empty();
    for (const v1::Handoff& h : d.handoffs()) {
      for (const auto& e : handoffs->entries()) {
        if (e->handoff.id() != h.id()) continue;
        rebuild = rebuild || e->before != nullptr;
        touched.insert(touched.end(), e->handoff.team_ids().begin(), e->handoff.team_ids().end());
      }
      rebuild = rebuild || h.pool_before_size() > 0;
      touched.insert(touched.end(), h.team_ids().begin(), h.team_ids().end());
    }
    ASSIGN_OR_RETURN(handoffs,
                     HandoffSet::Apply(handoffs, d.handoffs(), field + ".handoffs", &ended));
    for (const auto& [team, target] : change.set) touched.push_back(team);
    touched.insert(touched.end(), change.unset.begin(), change.unset.end());
    // A team's rules set its route's rules bit.
    for (const TeamRule& rule : change.rules) touched.push_back(rule.team_id);
    for (const TeamRuleKey& key : change.cleared_rules) touched.push_back(key.team_id);
    absl::StatusOr<std::shared_ptr<const Snapshot>> next = snapshot->Apply(change);
    if (!next.ok()) return Prefixed(next.status(), field + ": ");
    snapshot = *std::move(next);
  }
  // Pool indexes are stored in the index; a new pool table renumbers them.
  rebuild = rebuild || snapshot->pools() != current->snapshot().pools();

  absl::StatusOr<std::unique_ptr<const RouteIndex>> index;
  if (rebuild) {
    index = RouteIndex::Build(*snapshot, *handoffs);
  } else {
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    index = RouteIndex::Update(*current->index_, *snapshot, *handoffs, touched);
  }
  if (!index.ok()) return index.status();
  Publish(MakeView(snapshot, std::move(handoffs), *std::move(index)), /*reset=*/false, Now(),
          ended);
  return absl::OkStatus();
}

void Client::ConfirmCurrent(int64_t server_version) {
  {
    client_internal::MutexLock lock(&apply_mu_);
    if (current_.load(std::memory_order_relaxed) == nullptr) return;
    if (server_version <= version_.load(std::memory_order_relaxed)) {
      confirmed_at_ns_.store(absl::ToUnixNanos(Now()), std::memory_order_release);
    }
  }
  // Heartbeats come while no publication does: free the view the last
  // publication replaced.
  client_internal::Reclaim();
}

// ---- Client: the cache file ----

absl::Status Client::LoadCache() { return LoadCache(options_.cache_path); }

absl::Status Client::LoadCache(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("cache_path: empty");
  absl::StatusOr<client_internal::CacheContents> contents = client_internal::ReadCacheFile(path);
  if (!contents.ok()) {
    if (absl::IsNotFound(contents.status())) {
      spdlog::info("bucketmap client: no cache file at {}", path);
    } else {
      spdlog::warn("bucketmap client: ignoring cache file {}: {}", path,
                   contents.status().ToString());
    }
    return contents.status();
  }
  // A file that passed its checksum but does not build is still corrupt
  // from our point of view: written by a buggy release, say.
  auto corrupt = [&path](const absl::Status& status) {
    spdlog::warn("bucketmap client: ignoring cache file {}: {}", path, status.ToString());
    return absl::DataLossError(absl::StrCat("cache file: ", status.message()));
  };
  absl::StatusOr<MappingState> state = StateFromProto(contents->snapshot);
  if (!state.ok()) return corrupt(state.status());
  absl::StatusOr<std::shared_ptr<const Snapshot>> domain = Snapshot::Build(*std::move(state));
  if (!domain.ok()) return corrupt(domain.status());
  absl::StatusOr<std::shared_ptr<const HandoffSet>> handoffs =
      HandoffSet::Build(contents->snapshot.handoffs(), "snapshot.handoffs");
  if (!handoffs.ok()) return corrupt(handoffs.status());
  absl::StatusOr<std::unique_ptr<const RouteIndex>> index = RouteIndex::Build(**domain, **handoffs);
  if (!index.ok()) return corrupt(index.status());

  client_internal::MutexLock lock(&apply_mu_);
  const std::shared_ptr<const MappingView> current = CurrentForWriter();
  if (current != nullptr) {
    if (current->cluster_id() != (*domain)->cluster_id()) {
      spdlog::warn("bucketmap client: ignoring cache file {} of cluster {}; the mapping is of {}",
                   path, (*domain)->cluster_id(), current->cluster_id());
      return absl::FailedPreconditionError(
          absl::StrCat("cache file: of cluster ", (*domain)->cluster_id(),
                       " while the loaded mapping is of cluster ", current->cluster_id()));
    }
    if ((*domain)->version() <= current->version()) return absl::OkStatus();
  }
  std::shared_ptr<const MappingView> view =
      MakeView(*std::move(domain), *std::move(handoffs), *std::move(index));
  const absl::Time confirmed_at = contents->confirmed_at;
  spdlog::info(
      "bucketmap client: loaded mapping version {} of cluster {} from {}, confirmed {} ago",
      view->version(), view->cluster_id(), path, absl::FormatDuration(Now() - confirmed_at));
  Publish(std::move(view), /*reset=*/false, confirmed_at);
  return absl::OkStatus();
}

absl::Status Client::WriteCache() { return WriteCache(options_.cache_path); }

absl::Status Client::WriteCache(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("cache_path: empty");
  client_internal::MutexLock lock(&cache_mu_);
  // Taken under cache_mu_, so successive writes never go back in version.
  const std::shared_ptr<const MappingView> view = Current();
  if (view == nullptr) return absl::FailedPreconditionError("no mapping is loaded");
  v1::MappingSnapshot proto;
  ToProto(view->snapshot(), &proto);
  // Open handoffs travel with the file, so a producer or consumer started
  // from it still knows which teams are moving.
  for (const v1::Handoff* h : view->OpenHandoffs()) *proto.add_handoffs() = *h;
  const int64_t ns = confirmed_at_ns_.load(std::memory_order_acquire);
  const absl::Time confirmed_at = ns == kNever ? Now() : absl::FromUnixNanos(ns);
  return client_internal::WriteCacheFile(path, proto, confirmed_at);
}

}  // namespace bucketmap
