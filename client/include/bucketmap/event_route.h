// EventRoute: what MappingView::RouteEvent() returns for one event — the
// team's route, the topic to produce to (the event role's or the bucket's
// `overflow` role's) and what the team's rules say (docs/rules.md).
//
// Thread safety: a plain value. Its topic pointer belongs to the view that
// made it, and is valid for as long as the caller holds that view.
#ifndef BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_EVENT_ROUTE_H_
#define BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_EVENT_ROUTE_H_

#include <cstdint>
#include <string>

#include "bucketmap/route_result.h"

namespace bucketmap {

class MappingView;

class EventRoute {
 public:
  // No mapping: the route's status is kNoMapping, no topic.
  EventRoute() = default;

  // The team's route at the view's version (bucket, version, state...).
  const RouteResult& route() const { return route_; }
  // The topic to produce the event to: the event role's topic of the
  // team's bucket (ClientOptions::event_role), or its `overflow` topic when
  // overflowed(). nullptr when the event must not be produced: dropped(),
  // an unroutable team, or a bucket without a topic for the role.
  const std::string* topic() const { return topic_; }
  // A DROP rule: do not produce the event.
  bool dropped() const { return (flags_ & kDropped) != 0; }
  // topic() is the overflow topic: a FORCE_OVERFLOW rule, or a RATE_LIMIT
  // rule whose token bucket was empty (or whose key overflowed less than
  // the sticky window ago).
  bool overflowed() const { return (flags_ & kOverflowed) != 0; }
  // A SKIP_PERSON_PROCESSING rule: tell the consumers (say, with an event
  // header) to skip person processing for this event.
  bool skip_person_processing() const { return (flags_ & kSkipPersonProcessing) != 0; }

 private:
  friend class MappingView;
  static constexpr uint8_t kDropped = 1;
  static constexpr uint8_t kOverflowed = 2;
  static constexpr uint8_t kSkipPersonProcessing = 4;

  EventRoute(RouteResult route, const std::string* topic, uint8_t flags)
      : route_(route), topic_(topic), flags_(flags) {}

  RouteResult route_;
  const std::string* topic_ = nullptr;
  uint8_t flags_ = 0;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_INCLUDE_BUCKETMAP_EVENT_ROUTE_H_
