// PgStore's signals (SPEC §9): the lag exporter's readings (bucket_lag) and
// the load averages (load_slots, load_rates, load_meta), as described in
// migrations/0006_lag_and_load.sql and domain/load.h.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/store/pg_session.h"

namespace bucketmap {
namespace {

// Rows of one load window go in as arrays, pre-summed per key after the
// redirect of late windows, so ON CONFLICT touches each row once.
constexpr char kAddLoadSlots[] =
    "INSERT INTO load_slots (slot, kind, id, events, processing)"
    " SELECT GREATEST(s, $6::bigint), k, i, sum(e), sum(p)"
    " FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::float8[], $5::float8[])"
    " AS u(s, k, i, e, p) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    " ON CONFLICT (slot, kind, id) DO UPDATE SET events = load_slots.events + EXCLUDED.events,"
    " processing = load_slots.processing + EXCLUDED.processing";

// Folds window $1: value = decay^(windows since the row's) * value +
// (1 - decay) * window's rate.
constexpr char kFoldSlot[] =
    "INSERT INTO load_rates (kind, id, events, processing, slot)"
    " SELECT kind, id, $2 * events, $2 * processing, slot FROM load_slots WHERE slot = $1"
    " ORDER BY kind, id"
    " ON CONFLICT (kind, id) DO UPDATE SET"
    " events = load_rates.events * power($3::float8, EXCLUDED.slot - load_rates.slot)"
    " + EXCLUDED.events,"
    " processing = load_rates.processing * power($3::float8, EXCLUDED.slot - load_rates.slot)"
    " + EXCLUDED.processing, slot = EXCLUDED.slot";

std::string DoubleArray(const std::vector<double>& values) {
  std::vector<std::string> parts;
  parts.reserve(values.size());
  for (double v : values) parts.push_back(absl::StrFormat("%.17g", v));
  return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

template <typename T>
std::string IntegerArray(const std::vector<T>& values) {
  return absl::StrCat("{", absl::StrJoin(values, ","), "}");
}

}  // namespace

absl::Status PgStore::SaveLagReadings(const std::vector<LagReading>& readings) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  absl::StatusOr<bool> saved = RunWithRetry<bool>(
      [&] { return Acquire(deadline); }, "save lag readings",
      [&](Connection& conn, bool*) -> absl::StatusOr<bool> {
        pqxx::work tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        tx.exec0("DELETE FROM bucket_lag");
        for (const LagReading& r : readings) {
          std::optional<int64_t> messages;
          std::optional<double> seconds;
          if (r.up) {
            messages = r.messages;
            seconds = r.seconds;
          }
          tx.exec_params0(
              "INSERT INTO bucket_lag (bucket_id, role, consumer_group, up, messages, seconds,"
              " error, read_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
              " timestamptz 'epoch' + $8::bigint * interval '1 microsecond')"
              " ON CONFLICT (bucket_id, role) DO NOTHING",
              r.bucket_id, r.role, r.consumer_group, r.up, messages, seconds, r.error,
              absl::ToUnixMicros(r.read_at));
        }
        tx.commit();
        return true;
      });
  return saved.status();
}

absl::StatusOr<double> PgStore::LoadRebalanceChurn(const std::string& pool, int64_t day) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<double>(
      [&] { return Acquire(deadline); }, "load rebalance churn",
      [&](Connection& conn, bool*) -> absl::StatusOr<double> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::result r = tx.exec_params(
            "SELECT share_moved FROM rebalance_churn WHERE pool = $1 AND day = $2", pool, day);
        tx.commit();
        return r.empty() ? 0.0 : r[0][0].as<double>();
      });
}

absl::Status PgStore::AddRebalanceChurn(const std::string& pool, int64_t day, double share) {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  absl::StatusOr<bool> added = RunWithRetry<bool>(
      [&] { return Acquire(deadline); }, "add rebalance churn",
      [&](Connection& conn, bool*) -> absl::StatusOr<bool> {
        pqxx::work tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        tx.exec_params0(
            "INSERT INTO rebalance_churn (pool, day, share_moved) VALUES ($1, $2, $3)"
            " ON CONFLICT (pool, day) DO UPDATE"
            " SET share_moved = rebalance_churn.share_moved + excluded.share_moved",
            pool, day, share);
        tx.commit();
        return true;
      });
  return added.status();
}

absl::StatusOr<std::vector<LagReading>> PgStore::LoadLagReadings() {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<std::vector<LagReading>>(
      [&] { return Acquire(deadline); }, "load lag readings",
      [&](Connection& conn, bool*) -> absl::StatusOr<std::vector<LagReading>> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::result rows = tx.exec(
            "SELECT bucket_id, role, consumer_group, up, messages, seconds, error,"
            " (EXTRACT(EPOCH FROM read_at) * 1000000)::bigint FROM bucket_lag"
            " ORDER BY bucket_id, role COLLATE \"C\"");
        tx.commit();
        std::vector<LagReading> out(rows.size());
        for (size_t i = 0; i < rows.size(); ++i) {
          const pqxx::row& row = rows[i];
          LagReading& r = out[i];
          r.bucket_id = row[0].as<int32_t>();
          r.role = row[1].as<std::string>();
          r.consumer_group = row[2].as<std::string>();
          r.up = row[3].as<bool>();
          if (!row[4].is_null()) r.messages = row[4].as<int64_t>();
          if (!row[5].is_null()) r.seconds = row[5].as<double>();
          r.error = row[6].as<std::string>();
          r.read_at = FromDbMicros(row[7]);
        }
        return out;
      });
}

absl::Status PgStore::AddLoad(const LoadConfig& config, const LoadSlots& slots,
                              int64_t fold_through, double min_rate) {
  const int64_t window_ms = absl::ToInt64Milliseconds(config.window);
  const int64_t half_life_ms = absl::ToInt64Milliseconds(config.half_life);
  if (window_ms < 1 || half_life_ms < 1) {
    return absl::InvalidArgumentError("config: window and half-life must be at least 1 ms");
  }
  std::vector<int64_t> slot_col;
  std::vector<int16_t> kind_col;
  std::vector<int64_t> id_col;
  std::vector<double> events_col;
  std::vector<double> processing_col;
  for (const auto& [slot, rates] : slots) {
    for (const auto& [key, rate] : rates) {
      slot_col.push_back(slot);
      kind_col.push_back(static_cast<int16_t>(key.kind));
      id_col.push_back(key.id);
      events_col.push_back(rate.events);
      processing_col.push_back(rate.processing);
    }
  }
  const double decay = LoadDecay(config);
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  absl::StatusOr<bool> added = RunWithRetry<bool>(
      [&] { return Acquire(deadline); }, "add load",
      [&](Connection& conn, bool*) -> absl::StatusOr<bool> {
        pqxx::work tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::row meta = tx.exec1(
            "SELECT window_ms, half_life_ms, first_slot, folded_through FROM load_meta"
            " FOR UPDATE");
        std::optional<int64_t> first;
        std::optional<int64_t> folded;
        if (meta[0].as<int64_t>() != window_ms || meta[1].as<int64_t>() != half_life_ms) {
          tx.exec0("DELETE FROM load_slots");
          tx.exec0("DELETE FROM load_rates");
          tx.exec_params0(
              "UPDATE load_meta SET window_ms = $1, half_life_ms = $2, first_slot = NULL,"
              " folded_through = NULL",
              window_ms, half_life_ms);
        } else {
          if (!meta[2].is_null()) first = meta[2].as<int64_t>();
          if (!meta[3].is_null()) folded = meta[3].as<int64_t>();
        }
        if (!slot_col.empty()) {
          tx.exec_params0(kAddLoadSlots, IntegerArray(slot_col), IntegerArray(kind_col),
                          IntegerArray(id_col), DoubleArray(events_col),
                          DoubleArray(processing_col),
                          folded.has_value() ? *folded + 1 : std::numeric_limits<int64_t>::min());
        }
        if (!folded.has_value() || fold_through > *folded) {
          const pqxx::result due = tx.exec_params(
              "SELECT DISTINCT slot FROM load_slots WHERE slot <= $1 ORDER BY slot", fold_through);
          for (const pqxx::row& row : due) {
            const int64_t slot = row[0].as<int64_t>();
            tx.exec_params0(kFoldSlot, slot, 1.0 - decay, decay);
            if (!first.has_value()) first = slot;
          }
          tx.exec_params0("DELETE FROM load_slots WHERE slot <= $1", fold_through);
          if (first.has_value()) {
            folded = std::max(folded.value_or(fold_through), fold_through);
            const double windows = static_cast<double>(*folded - *first + 1);
            const double floor = min_rate * (1.0 - std::pow(decay, windows));
            tx.exec_params0(
                "DELETE FROM load_rates WHERE events * power($1::float8, $2 - slot) < $3"
                " AND processing * power($1::float8, $2 - slot) < $3",
                decay, *folded, floor);
            tx.exec_params0("UPDATE load_meta SET first_slot = $1, folded_through = $2", *first,
                            *folded);
          }
        }
        tx.commit();
        return true;
      });
  return added.status();
}

absl::StatusOr<LoadTable> PgStore::LoadLoadTable() {
  const absl::Time deadline = options_.clock->Now() + options_.read_timeout;
  return RunWithRetry<LoadTable>(
      [&] { return Acquire(deadline); }, "load load averages",
      [&](Connection& conn, bool*) -> absl::StatusOr<LoadTable> {
        pqxx::read_transaction tx(conn.conn);
        SetTimeouts(tx, deadline - options_.clock->Now());
        const pqxx::row meta =
            tx.exec1("SELECT window_ms, half_life_ms, first_slot, folded_through FROM load_meta");
        const pqxx::result rows =
            tx.exec("SELECT kind, id, events, processing, slot FROM load_rates");
        tx.commit();
        LoadTable table;
        table.config.window = absl::Milliseconds(meta[0].as<int64_t>());
        table.config.half_life = absl::Milliseconds(meta[1].as<int64_t>());
        table.first_slot = meta[2].is_null() ? -1 : meta[2].as<int64_t>();
        table.folded_through = meta[3].is_null() ? -1 : meta[3].as<int64_t>();
        table.rows.reserve(rows.size());
        for (const pqxx::row& row : rows) {
          LoadRow r;
          r.key.kind = static_cast<LoadKind>(row[0].as<int>());
          r.key.id = row[1].as<int64_t>();
          r.value.events = row[2].as<double>();
          r.value.processing = row[3].as<double>();
          r.slot = row[4].as<int64_t>();
          table.rows.push_back(r);
        }
        return table;
      });
}

}  // namespace bucketmap
