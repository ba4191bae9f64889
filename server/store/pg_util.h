// Helpers shared by the PostgreSQL adapters (PgStore, the migrator):
// mapping libpqxx exceptions to absl::Status and building conninfo strings.
// Internal to bucketmap_store; pure functions, safe from any thread.
#ifndef BUCKETMAP_SERVER_STORE_PG_UTIL_H_
#define BUCKETMAP_SERVER_STORE_PG_UTIL_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace bucketmap {

// Converts the exception being handled to a Status; call it only inside a
// catch block. `context` prefixes the message, e.g. "load snapshot".
//   Unavailable: the connection is broken or cannot be made, the server is
//     shutting down or starting, a statement or lock timeout fired (the
//     deadline), or a COMMIT's outcome is unknown;
//   Aborted: a serialization failure or deadlock;
//   Internal: anything else (a bug or a schema mismatch).
absl::Status StatusFromCurrentException(absl::string_view context);

// True when `status` came from a broken connection: the connection must be
// dropped rather than returned to a pool.
bool IsConnectionLoss(const absl::Status& status);

// Returns `conninfo` (a postgresql:// URI or a keyword/value string) with
// connect_timeout set to `connect_timeout_seconds` and TCP keepalives and
// tcp_user_timeout set, so a vanished server is noticed within seconds;
// parameters the caller already set are kept.
std::string WithConnectionDefaults(const std::string& conninfo, int connect_timeout_seconds);

// Returns `conninfo` with each (keyword, value) of `params` added unless
// the caller already set that keyword.
std::string WithConnectionParams(const std::string& conninfo,
                                 const std::vector<std::pair<std::string, std::string>>& params);

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_STORE_PG_UTIL_H_
