#include "server/store/pg_util.h"

#include <exception>
#include <pqxx/except>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace bucketmap {
namespace {

// Marks statuses built from a broken connection, so callers can tell them
// from other Unavailable causes (a timeout) without parsing messages.
constexpr char kConnectionLossPayload[] = "bucketmap.pg/connection-loss";

absl::Status ConnectionLoss(absl::string_view context, absl::string_view what) {
  absl::Status status =
      absl::UnavailableError(absl::StrCat(context, ": PostgreSQL is unreachable: ", what));
  status.SetPayload(kConnectionLossPayload, absl::Cord("1"));
  return status;
}

absl::Status FromSqlState(absl::string_view context, const std::string& sqlstate,
                          absl::string_view what) {
  // Statement or lock timeout: the caller's deadline passed.
  if (sqlstate == "57014" || sqlstate == "55P03") {
    return absl::UnavailableError(
        absl::StrCat(context, ": deadline exceeded in PostgreSQL: ", what));
  }
  // Connection exceptions (class 08), admin/crash shutdown, the server
  // starting up, too many connections: retrying later may work.
  if (absl::StartsWith(sqlstate, "08") || sqlstate == "57P01" || sqlstate == "57P02" ||
      sqlstate == "57P03" || sqlstate == "53300") {
    return ConnectionLoss(context, what);
  }
  if (sqlstate == "40001" || sqlstate == "40P01") {
    return absl::AbortedError(absl::StrCat(context, ": transaction conflict, retry: ", what));
  }
  return absl::InternalError(
      absl::StrCat(context, ": PostgreSQL error ", sqlstate.empty() ? "" : sqlstate, ": ", what));
}

}  // namespace

absl::Status StatusFromCurrentException(absl::string_view context) {
  try {
    throw;
  } catch (const pqxx::broken_connection& e) {
    return ConnectionLoss(context, e.what());
  } catch (const pqxx::in_doubt_error& e) {
    return ConnectionLoss(context, absl::StrCat("outcome of COMMIT unknown: ", e.what()));
  } catch (const pqxx::statement_completion_unknown& e) {
    return ConnectionLoss(context, absl::StrCat("outcome of statement unknown: ", e.what()));
  } catch (const pqxx::sql_error& e) {
    return FromSqlState(context, e.sqlstate(), e.what());
  } catch (const pqxx::transaction_rollback& e) {
    return absl::AbortedError(absl::StrCat(context, ": transaction conflict, retry: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(context, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(context, ": unknown exception"));
  }
}

bool IsConnectionLoss(const absl::Status& status) {
  return status.GetPayload(kConnectionLossPayload).has_value();
}

std::string WithConnectionDefaults(const std::string& conninfo, int connect_timeout_seconds) {
  // Without these, a peer that vanishes (host down, network partition)
  // leaves a call blocked for TCP's ~15-minute retransmission limit:
  // statement_timeout is enforced by the server, which is then gone.
  return WithConnectionParams(conninfo,
                              {
                                  {"connect_timeout", absl::StrCat(connect_timeout_seconds)},
                                  {"keepalives_idle", "5"},
                                  {"keepalives_interval", "2"},
                                  {"keepalives_count", "3"},
                                  {"tcp_user_timeout", "10000"},  // ms of unacknowledged data
                              });
}

std::string WithConnectionParams(const std::string& conninfo,
                                 const std::vector<std::pair<std::string, std::string>>& params) {
  const bool uri =
      absl::StartsWith(conninfo, "postgresql://") || absl::StartsWith(conninfo, "postgres://");
  std::string result = conninfo;
  for (const auto& [key, value] : params) {
    if (absl::StrContains(conninfo, absl::StrCat(key, "="))) continue;
    if (uri) {
      // A fragment is not part of libpq's URI syntax, so '?' is the only
      // separator to look for.
      absl::StrAppend(&result, absl::StrContains(result, '?') ? "&" : "?", key, "=", value);
    } else {
      absl::StrAppend(&result, result.empty() ? "" : " ", key, "=", value);
    }
  }
  return result;
}

}  // namespace bucketmap
