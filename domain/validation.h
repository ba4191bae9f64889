// Validation of request shapes: formats, ranges and sizes that do not
// depend on the current state.
//
// Every function returns OK or InvalidArgument whose message starts with
// the offending field's path as given by the caller, e.g.
// "bucket.topics[ingestion]: ...". Pure functions; thread-safe.
#ifndef BUCKETMAP_DOMAIN_VALIDATION_H_
#define BUCKETMAP_DOMAIN_VALIDATION_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "domain/model.h"

namespace bucketmap {

inline constexpr size_t kMaxReasonBytes = 1024;
inline constexpr size_t kMaxRequestIdBytes = 128;
inline constexpr size_t kMaxTopics = 32;
inline constexpr size_t kMaxLabels = 64;
inline constexpr size_t kMaxLabelKeyBytes = 63;
inline constexpr size_t kMaxLabelValueBytes = 256;
inline constexpr size_t kMaxConsumerGroupBytes = 255;
inline constexpr int32_t kMinWeight = 1;
inline constexpr int32_t kMaxWeight = 1000;
// Client text echoed in an error message or a log line is cut to this.
inline constexpr size_t kMaxQuotedBytes = 80;

// QuoteUntrusted()
//
// Returns `v` for an error message or a log line: in double quotes,
// C-escaped (so control characters, NUL and invalid UTF-8 show as escapes
// and cannot forge a line), and cut to kMaxQuotedBytes with "..." after.
// Every text a client controls goes through it before it is echoed.
std::string QuoteUntrusted(std::string_view v);

// KeyPath()
//
// The path of map entry `key` of `field`, for an error message:
// `field[key]`, the key C-escaped and cut as by QuoteUntrusted (then
// `field[key...]`), so a 100 KB key cannot make the message too large to
// travel in a gRPC status.
std::string KeyPath(std::string_view field, std::string_view key);

// TruncateUtf8()
//
// The longest prefix of `s` of at most `max_bytes` that does not end inside
// a UTF-8 sequence (a prefix of valid UTF-8 stays valid).
std::string_view TruncateUtf8(std::string_view s, size_t max_bytes);

// IsValidUtf8()
//
// Whether `s` is well-formed UTF-8: no overlong forms, surrogates or
// values beyond U+10FFFF.
bool IsValidUtf8(std::string_view s);

// [a-z0-9][a-z0-9-]{0,62}
absl::Status ValidateBucketName(std::string_view name, std::string_view field);
// Pool names follow the bucket-name rule.
absl::Status ValidatePoolName(std::string_view pool, std::string_view field);
// Kafka's rule: [a-zA-Z0-9._-]{1,249}, and never "." or "..".
absl::Status ValidateTopicName(std::string_view topic, std::string_view field);
// Roles (keys of topics/consumer_groups): [a-z0-9][a-z0-9_-]{0,62}.
absl::Status ValidateRole(std::string_view role, std::string_view field);
// team_id >= 1.
absl::Status ValidateTeamId(int64_t team_id, std::string_view field);
// bucket_id >= 1.
absl::Status ValidateBucketId(int64_t bucket_id, std::string_view field);
// Required, valid UTF-8, at most kMaxReasonBytes.
absl::Status ValidateReason(std::string_view reason);
// Optional; at most kMaxRequestIdBytes printable ASCII.
absl::Status ValidateRequestId(std::string_view request_id);
// expected_version >= 0.
absl::Status ValidateExpectedVersion(int64_t expected_version);
// 0 (meaning the default) or 1..max.
absl::Status ValidatePageSize(int64_t page_size, int64_t max, std::string_view field);
absl::Status ValidateWeight(int32_t weight, std::string_view field);

// Validates every field of a bucket in a CreateBucket request (field paths
// prefixed "bucket."): id, created/updated versions unset; name; weight 0
// (default) or in range; pool empty (default) or valid; state unspecified,
// ACTIVE or PAUSED; topics, consumer groups (each role must have a topic),
// drain_order (distinct roles of `topics`), labels, and map sizes.
// `state_raw` is the wire value of the state (0 = unspecified).
absl::Status ValidateNewBucket(const Bucket& bucket, int state_raw);

// Validates update-mask paths (non-empty, known, no duplicates; "id" and
// "name" are immutable) and the masked values of `values`.
absl::Status ValidateBucketUpdate(const Bucket& values, int state_raw,
                                  const std::vector<std::string>& paths);

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_VALIDATION_H_
