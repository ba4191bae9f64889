#include "fuzz/fuzz_util.h"

#include <cstdint>
#include <string>
#include <utility>

#include "google/protobuf/stubs/logging.h"

namespace bucketmap {
namespace fuzz {
namespace {

// Most inputs are not valid protos; protobuf would log each rejected
// string field, which slows the fuzzers down and hides their output.
[[maybe_unused]] const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

Bucket MakeBucket(int32_t id, const std::string& pool, BucketState state) {
  Bucket b;
  b.id = id;
  b.name = "b" + std::to_string(id);
  b.state = state;
  b.pool = pool;
  b.weight = 50 * id;
  b.topics = {{"ingest", "t-ingest-" + std::to_string(id)}, {"out", "t-out-" + std::to_string(id)}};
  b.consumer_groups = {{"ingest", "g-" + std::to_string(id)}};
  b.drain_order = {"ingest", "out"};
  b.labels = {{"tier", pool}};
  b.created_version = id;
  b.updated_version = id;
  return b;
}

void CheckRoute(const MappingView& view, const Snapshot& expected, int64_t team) {
  const RouteResult got = view.Route(team);
  Check(got.version() == expected.version(), "route version");
  if (team < 1) {
    Check(got.status() == RouteStatus::kInvalidTeam, "invalid team status");
    return;
  }
  const Route want = expected.RouteOf(team);
  Check(got.bucket_id() == want.bucket_id, "route bucket id");
  Check(got.source() == want.source, "route source");
  if (!want.routable()) {
    Check(got.status() == RouteStatus::kNoPlaceableBucket, "unroutable status");
    return;
  }
  Check(got.status() == RouteStatus::kOk, "routable status");
  const Bucket* bucket = expected.FindBucket(want.bucket_id);
  Check(bucket != nullptr, "routed to a missing bucket");
  Check(got.bucket_state() == bucket->state, "route bucket state");
}

}  // namespace

MappingState BaseState() {
  MappingState state;
  state.version = kBaseVersion;
  state.cluster_id = "fuzz-cluster";
  state.buckets = {MakeBucket(1, "default", BucketState::kActive),
                   MakeBucket(2, "default", BucketState::kPaused),
                   MakeBucket(3, "paid", BucketState::kActive),
                   MakeBucket(4, "paid", BucketState::kDraining),
                   MakeBucket(5, "default", BucketState::kRetired)};
  state.assignments = {{7, Target::Pin(3)},
                       {8, Target::Pool("paid")},
                       {9, Target::Pool("default")},
                       {100, Target::Pin(2)},
                       {101, Target::Pool("empty")}};
  return state;
}

std::shared_ptr<const Snapshot> BaseSnapshot() {
  auto built = Snapshot::Build(BaseState());
  Check(built.ok(), "the base state does not build");
  return *std::move(built);
}

void CheckSameRoutes(const Client& client, const Snapshot& expected) {
  std::shared_ptr<const MappingView> view = client.Current();
  Check(view != nullptr, "no view after an OK apply");
  Check(view->version() == expected.version(), "view version");
  Check(client.version() == expected.version(), "client version");
  for (int64_t team : expected.team_ids()) {
    // Neighbours too, without overflowing at the ends of the range.
    CheckRoute(*view, expected, team);
    if (team > INT64_MIN) CheckRoute(*view, expected, team - 1);
    if (team < INT64_MAX) CheckRoute(*view, expected, team + 1);
  }
  for (int64_t t = -2; t <= 64; ++t) CheckRoute(*view, expected, t);
  for (int64_t t : {INT64_MAX, INT64_MAX - 1, int64_t{1} << 40}) CheckRoute(*view, expected, t);
}

}  // namespace fuzz
}  // namespace bucketmap
