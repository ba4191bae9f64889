#include "domain/validation.h"

#include <limits>
#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "domain/status_macros.h"

namespace bucketmap {
namespace {

// Character checks instead of std::regex: faster, and no locale surprises.
bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }

// Matches [a-z0-9][<first|extra>]{0,max_len-1}.
bool MatchesName(std::string_view s, size_t max_len, std::string_view extra) {
  if (s.empty() || s.size() > max_len || !IsLowerAlnum(s[0])) return false;
  for (char c : s.substr(1)) {
    if (!IsLowerAlnum(c) && extra.find(c) == std::string_view::npos) return false;
  }
  return true;
}

std::string F(std::string_view field) { return std::string(field); }

absl::Status Invalid(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(F(field), ": ", F(what)));
}

// Printable ASCII; `allow_space` admits ' '.
bool PrintableAscii(std::string_view s, bool allow_space) {
  for (char c : s) {
    if (c == ' ' ? !allow_space : (c < 0x21 || c > 0x7E)) return false;
  }
  return true;
}

const std::set<std::string_view>& KnownPaths() {
  static const auto* const kPaths = new std::set<std::string_view>{
      "state", "weight", "pool", "topics", "consumer_groups", "drain_order", "labels"};
  return *kPaths;
}

bool ImmutablePath(std::string_view p) {
  return p == "id" || p == "name" || p == "created_version" || p == "updated_version";
}

absl::Status ValidateTopics(const std::map<std::string, std::string>& topics) {
  if (topics.size() > kMaxTopics) {
    return Invalid("bucket.topics",
                   absl::StrCat("at most ", kMaxTopics, " entries, got ", topics.size()));
  }
  for (const auto& [role, topic] : topics) {
    const std::string field = KeyPath("bucket.topics", role);
    RETURN_IF_ERROR(ValidateRole(role, field));
    RETURN_IF_ERROR(ValidateTopicName(topic, field));
  }
  return absl::OkStatus();
}

// `topics` is null when the roles cannot be cross-checked here (an update
// that does not mask topics); the planner checks them against the result.
absl::Status ValidateConsumerGroups(const std::map<std::string, std::string>& groups,
                                    const std::map<std::string, std::string>* topics) {
  if (groups.size() > kMaxTopics) {
    return Invalid("bucket.consumer_groups",
                   absl::StrCat("at most ", kMaxTopics, " entries, got ", groups.size()));
  }
  for (const auto& [role, group] : groups) {
    const std::string field = KeyPath("bucket.consumer_groups", role);
    RETURN_IF_ERROR(ValidateRole(role, field));
    if (group.empty() || group.size() > kMaxConsumerGroupBytes ||
        !PrintableAscii(group, /*allow_space=*/false)) {
      return Invalid(field, absl::StrCat("group id ", QuoteUntrusted(group), " must be 1..",
                                         kMaxConsumerGroupBytes,
                                         " printable ASCII characters without spaces"));
    }
    if (topics != nullptr && topics->count(role) == 0) {
      return Invalid(field,
                     absl::StrCat("role ", QuoteUntrusted(role), " has no topic in bucket.topics"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDrainOrder(const std::vector<std::string>& order,
                                const std::map<std::string, std::string>* topics) {
  if (order.size() > kMaxTopics) {
    return Invalid("bucket.drain_order",
                   absl::StrCat("at most ", kMaxTopics, " entries, got ", order.size()));
  }
  std::set<std::string_view> seen;
  for (size_t i = 0; i < order.size(); ++i) {
    const std::string field = absl::StrCat("bucket.drain_order[", i, "]");
    RETURN_IF_ERROR(ValidateRole(order[i], field));
    if (!seen.insert(order[i]).second) {
      return Invalid(field, absl::StrCat("duplicate role ", QuoteUntrusted(order[i])));
    }
    if (topics != nullptr && topics->count(order[i]) == 0) {
      return Invalid(
          field, absl::StrCat("role ", QuoteUntrusted(order[i]), " has no topic in bucket.topics"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLabels(const std::map<std::string, std::string>& labels) {
  if (labels.size() > kMaxLabels) {
    return Invalid("bucket.labels",
                   absl::StrCat("at most ", kMaxLabels, " entries, got ", labels.size()));
  }
  for (const auto& [key, value] : labels) {
    const std::string field = KeyPath("bucket.labels", key);
    if (!MatchesName(key, kMaxLabelKeyBytes, "._/-")) {
      return Invalid(field, absl::StrCat("key ", QuoteUntrusted(key),
                                         " must match [a-z0-9][a-z0-9._/-]{0,62}"));
    }
    if (value.size() > kMaxLabelValueBytes) {
      return Invalid(
          field, absl::StrCat("value is ", value.size(), " bytes; at most ", kMaxLabelValueBytes));
    }
    if (!IsValidUtf8(value)) return Invalid(field, "value must be valid UTF-8");
  }
  return absl::OkStatus();
}

}  // namespace

std::string QuoteUntrusted(std::string_view v) {
  const bool cut = v.size() > kMaxQuotedBytes;
  const std::string shown =
      absl::CHexEscape(absl::string_view(v.data(), cut ? kMaxQuotedBytes : v.size()));
  return absl::StrCat("\"", shown, cut ? "\"..." : "\"");
}

std::string KeyPath(std::string_view field, std::string_view key) {
  const bool cut = key.size() > kMaxQuotedBytes;
  return absl::StrCat(
      absl::string_view(field.data(), field.size()), "[",
      absl::CHexEscape(absl::string_view(key.data(), cut ? kMaxQuotedBytes : key.size())),
      cut ? "...]" : "]");
}

std::string_view TruncateUtf8(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t end = max_bytes;
  // Back up over continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and values beyond Unicode.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return false;
    }
    i += len;
  }
  return true;
}

absl::Status ValidateBucketName(std::string_view name, std::string_view field) {
  if (name.empty()) return Invalid(field, "required; must match [a-z0-9][a-z0-9-]{0,62}");
  if (!MatchesName(name, 63, "-")) {
    return Invalid(field, absl::StrCat("bucket name ", QuoteUntrusted(name),
                                       " must match [a-z0-9][a-z0-9-]{0,62}"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePoolName(std::string_view pool, std::string_view field) {
  if (pool.empty()) return Invalid(field, "required; must match [a-z0-9][a-z0-9-]{0,62}");
  if (!MatchesName(pool, 63, "-")) {
    return Invalid(field, absl::StrCat("pool name ", QuoteUntrusted(pool),
                                       " must match [a-z0-9][a-z0-9-]{0,62}"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTopicName(std::string_view topic, std::string_view field) {
  if (topic == "." || topic == "..") {
    return Invalid(field, absl::StrCat("topic ", QuoteUntrusted(topic),
                                       " is not allowed (Kafka reserves "
                                       "\".\" and \"..\")"));
  }
  bool ok = !topic.empty() && topic.size() <= 249;
  for (char c : topic) ok = ok && (IsAlnum(c) || c == '.' || c == '_' || c == '-');
  if (!ok) {
    return Invalid(
        field, absl::StrCat("topic ", QuoteUntrusted(topic), " must match [a-zA-Z0-9._-]{1,249}"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRole(std::string_view role, std::string_view field) {
  if (!MatchesName(role, 63, "_-")) {
    return Invalid(
        field, absl::StrCat("role ", QuoteUntrusted(role), " must match [a-z0-9][a-z0-9_-]{0,62}"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTeamId(int64_t team_id, std::string_view field) {
  if (team_id < 1) return Invalid(field, absl::StrCat("must be >= 1, got ", team_id));
  return absl::OkStatus();
}

absl::Status ValidateBucketId(int64_t bucket_id, std::string_view field) {
  if (bucket_id < 1 || bucket_id > std::numeric_limits<int32_t>::max()) {
    return Invalid(field, absl::StrCat("must be between 1 and ",
                                       std::numeric_limits<int32_t>::max(), ", got ", bucket_id));
  }
  return absl::OkStatus();
}

absl::Status ValidateReason(std::string_view reason) {
  if (reason.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return Invalid("reason", "required; say why the mapping changes");
  }
  if (reason.size() > kMaxReasonBytes) {
    return Invalid("reason",
                   absl::StrCat("at most ", kMaxReasonBytes, " bytes, got ", reason.size()));
  }
  if (!IsValidUtf8(reason)) return Invalid("reason", "must be valid UTF-8");
  return absl::OkStatus();
}

absl::Status ValidateRequestId(std::string_view request_id) {
  if (request_id.size() > kMaxRequestIdBytes) {
    return Invalid("request_id",
                   absl::StrCat("at most ", kMaxRequestIdBytes, " bytes, got ", request_id.size()));
  }
  if (!PrintableAscii(request_id, /*allow_space=*/true)) {
    return Invalid("request_id", "must be printable ASCII");
  }
  return absl::OkStatus();
}

absl::Status ValidateExpectedVersion(int64_t expected_version) {
  if (expected_version < 0) {
    return Invalid("expected_version", absl::StrCat("must be >= 0, got ", expected_version));
  }
  return absl::OkStatus();
}

absl::Status ValidatePageSize(int64_t page_size, int64_t max, std::string_view field) {
  if (page_size < 0 || page_size > max) {
    return Invalid(field, absl::StrCat("must be 0 (the default) or 1..", max, ", got ", page_size));
  }
  return absl::OkStatus();
}

absl::Status ValidateWeight(int32_t weight, std::string_view field) {
  if (weight < kMinWeight || weight > kMaxWeight) {
    return Invalid(
        field, absl::StrCat("must be between ", kMinWeight, " and ", kMaxWeight, ", got ", weight));
  }
  return absl::OkStatus();
}

absl::Status ValidateNewBucket(const Bucket& bucket, int state_raw) {
  if (bucket.id != 0) return Invalid("bucket.id", "must be unset; the server assigns it");
  if (bucket.created_version != 0) {
    return Invalid("bucket.created_version", "must be unset; the server assigns it");
  }
  if (bucket.updated_version != 0) {
    return Invalid("bucket.updated_version", "must be unset; the server assigns it");
  }
  RETURN_IF_ERROR(ValidateBucketName(bucket.name, "bucket.name"));
  if (bucket.weight != 0) RETURN_IF_ERROR(ValidateWeight(bucket.weight, "bucket.weight"));
  if (!bucket.pool.empty()) RETURN_IF_ERROR(ValidatePoolName(bucket.pool, "bucket.pool"));
  if (state_raw != 0 && state_raw != static_cast<int>(BucketState::kActive) &&
      state_raw != static_cast<int>(BucketState::kPaused)) {
    const bool known = state_raw == static_cast<int>(BucketState::kDraining) ||
                       state_raw == static_cast<int>(BucketState::kRetired);
    return Invalid("bucket.state",
                   absl::StrCat("a new bucket must be ACTIVE or PAUSED, got ",
                                known ? BucketStateName(static_cast<BucketState>(state_raw))
                                      : std::to_string(state_raw)));
  }
  RETURN_IF_ERROR(ValidateTopics(bucket.topics));
  RETURN_IF_ERROR(ValidateConsumerGroups(bucket.consumer_groups, &bucket.topics));
  RETURN_IF_ERROR(ValidateDrainOrder(bucket.drain_order, &bucket.topics));
  return ValidateLabels(bucket.labels);
}

absl::Status ValidateBucketUpdate(const Bucket& values, int state_raw,
                                  const std::vector<std::string>& paths) {
  if (paths.empty()) return Invalid("update_mask.paths", "at least one path is required");
  std::set<std::string_view> masked;
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string field = absl::StrCat("update_mask.paths[", i, "]");
    if (ImmutablePath(paths[i])) {
      return Invalid(field, absl::StrCat(QuoteUntrusted(paths[i]), " is immutable"));
    }
    if (KnownPaths().count(paths[i]) == 0) {
      return Invalid(
          field, absl::StrCat("unknown field ", QuoteUntrusted(paths[i]), "; known: ",
                              "state, weight, pool, topics, consumer_groups, drain_order, labels"));
    }
    if (!masked.insert(paths[i]).second) {
      return Invalid(field, absl::StrCat("duplicate path ", QuoteUntrusted(paths[i])));
    }
  }
  if (masked.count("state") && (state_raw < static_cast<int>(BucketState::kActive) ||
                                state_raw > static_cast<int>(BucketState::kRetired))) {
    return Invalid("bucket.state",
                   absl::StrCat("must be ACTIVE, PAUSED, DRAINING or RETIRED, got ", state_raw));
  }
  // A masked but unset weight or pool resets it to its default.
  if (masked.count("weight") && values.weight != 0) {
    RETURN_IF_ERROR(ValidateWeight(values.weight, "bucket.weight"));
  }
  if (masked.count("pool") && !values.pool.empty()) {
    RETURN_IF_ERROR(ValidatePoolName(values.pool, "bucket.pool"));
  }
  const bool topics = masked.count("topics") > 0;
  if (topics) RETURN_IF_ERROR(ValidateTopics(values.topics));
  if (masked.count("consumer_groups")) {
    RETURN_IF_ERROR(
        ValidateConsumerGroups(values.consumer_groups, topics ? &values.topics : nullptr));
  }
  if (masked.count("drain_order")) {
    RETURN_IF_ERROR(ValidateDrainOrder(values.drain_order, topics ? &values.topics : nullptr));
  }
  if (masked.count("labels")) RETURN_IF_ERROR(ValidateLabels(values.labels));
  return absl::OkStatus();
}

}  // namespace bucketmap
