// Helpers of the handoff tests that talk to a server: find a handoff
// through ListHandoffs, and wait for it to reach a state. Header-only.
#ifndef BUCKETMAP_TESTS_HANDOFF_HANDOFF_TEST_UTIL_H_
#define BUCKETMAP_TESTS_HANDOFF_HANDOFF_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "bucketmap/v1/admin.grpc.pb.h"
#include "gtest/gtest.h"

namespace bucketmap {

// Handoff `id` as ListHandoffs shows it (ended ones included); nullopt
// when absent or when the call fails.
inline std::optional<v1::Handoff> FindHandoff(v1::AdminService::Stub* admin, int64_t id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ListHandoffsRequest req;
  req.set_include_ended(true);
  v1::ListHandoffsResponse resp;
  if (!admin->ListHandoffs(&ctx, req, &resp).ok()) return std::nullopt;
  for (const v1::Handoff& h : resp.handoffs()) {
    if (h.id() == id) return h;
  }
  return std::nullopt;
}

// Polls until handoff `id` satisfies `pred`; returns its last state, and
// adds a failure (with `context`, e.g. a server log) on timeout.
template <typename Pred>
v1::Handoff WaitForHandoff(v1::AdminService::Stub* admin, int64_t id, Pred pred,
                           absl::Duration timeout = absl::Seconds(20),
                           const std::string& context = "") {
  const absl::Time end = absl::Now() + timeout;
  std::optional<v1::Handoff> h;
  while (absl::Now() < end) {
    h = FindHandoff(admin, id);
    if (h.has_value() && pred(*h)) return *h;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ADD_FAILURE() << "handoff " << id << " never reached the expected state; last: "
                << (h.has_value() ? h->ShortDebugString() : "absent") << "\n"
                << context;
  return h.value_or(v1::Handoff());
}

// Polls ListClients until `client_id` is listed (its session is recorded
// in PostgreSQL and leased, so writes and the switch barrier count it);
// adds a failure on timeout. A session is recorded up to one
// --client_flush after it subscribes.
inline void WaitForClientLeased(v1::AdminService::Stub* admin, const std::string& client_id,
                                absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListClientsResponse resp;
    if (admin->ListClients(&ctx, v1::ListClientsRequest(), &resp).ok()) {
      for (const v1::ClientInfo& c : resp.clients()) {
        if (c.client_id() == client_id) return;
      }
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  ADD_FAILURE() << "client " << client_id << " was never listed by ListClients";
}

inline auto InState(v1::HandoffPhase phase) {
  return [phase](const v1::Handoff& h) { return h.state() == phase; };
}

// Ended: COMPLETED, FORCED or CANCELLED.
inline bool Ended(const v1::Handoff& h) {
  return h.state() != v1::HANDOFF_SWITCHING && h.state() != v1::HANDOFF_DRAINING;
}

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_HANDOFF_HANDOFF_TEST_UTIL_H_
