// Authentication and authorisation of gRPC calls (SPEC §3, docs/security.md).
//
// Callers send `authorization: Bearer <token>`. The server never stores
// tokens: the tokens file (--auth_tokens_file) holds one line per token,
//
//   <name> <role> <sha256-hex-of-token>     # role: reader | admin
//
// and a presented token is hashed and compared, in constant time, with
// every entry. The token's name is the caller's identity: the actor of the
// change log and the key of the write rate limit.
//
// A TokenStore holds the current table; Reload() (SIGHUP in main.cc)
// swaps in a new one atomically, or keeps the old one when the file is bad.
// An Authorizer answers, for one call, "who is this and may they do that".
// Without a TokenStore it runs in development mode: every call is allowed
// and the actor is whatever the caller names in `x-bucketmap-actor`.
//
// Nothing here ever logs or returns a presented token, not even in part.
//
// Thread safety: TokenStore and Authorizer are thread-safe; lookups take a
// reference to the current table and never block a reload for long.
#ifndef BUCKETMAP_SERVER_RPC_AUTH_H_
#define BUCKETMAP_SERVER_RPC_AUTH_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"

namespace bucketmap {

enum class Role { kReader = 1, kAdmin = 2 };

// "reader" or "admin".
const char* RoleName(Role role);

using Sha256Digest = std::array<uint8_t, 32>;

// SHA-256 of `data` (OpenSSL libcrypto).
Sha256Digest Sha256(absl::string_view data);

struct TokenEntry {
  std::string name;
  Role role = Role::kReader;
  Sha256Digest hash{};
};

// Parses a tokens file. Blank lines and everything from `#` on are
// ignored. Returns InvalidArgument naming the line ("line 3: ...") for a
// line without exactly three fields, a name that is not [A-Za-z0-9._@-]{1,64},
// an unknown role, a hash that is not 64 hex digits, or a name or hash
// that appears twice. An empty table is allowed (it refuses everyone).
absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view contents);

// The caller of one RPC.
struct Identity {
  std::string name;
  // Unset for anonymous readers and in development mode.
  std::optional<Role> role;
};

class TokenStore {
 public:
  // Reads and parses `path`. NotFound / InvalidArgument (with the path).
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(std::string path);
  // A store over a fixed table (tests); Reload() then fails.
  explicit TokenStore(std::vector<TokenEntry> entries);

  // Re-reads the file. On success the new table replaces the old one for
  // every later lookup; on error the old table stays and the error (which
  // names the path and line, never a token) is returned.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // The entry whose hash is SHA-256(token), if any. Every entry is
  // compared, in constant time, so timing does not reveal which hashes or
  // how much of one matched.
  std::optional<TokenEntry> Find(absl::string_view token) const ABSL_LOCKS_EXCLUDED(mu_);

  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& path() const { return path_; }

 private:
  using Table = std::vector<TokenEntry>;
  TokenStore(std::string path, std::vector<TokenEntry> entries);
  std::shared_ptr<const Table> Current() const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Table> table_ ABSL_GUARDED_BY(mu_);
};

// What a call needs.
enum class Access {
  kRead,   // MappingService
  kAdmin,  // AdminService
};

class Authorizer {
 public:
  // `tokens` null: development mode, everything is allowed. Otherwise
  // reads need a reader or admin token (or none, with
  // allow_anonymous_reads) and AdminService needs an admin token.
  Authorizer(std::shared_ptr<TokenStore> tokens, bool allow_anonymous_reads);

  bool enabled() const { return tokens_ != nullptr; }

  // Returns the caller of `ctx` if it may have `access`: UNAUTHENTICATED
  // for a missing, malformed or unknown token (an anonymous read is
  // allowed with allow_anonymous_reads; a token, if sent, must still be
  // valid), PERMISSION_DENIED for a reader calling AdminService.
  absl::StatusOr<Identity> Check(const grpc::ServerContextBase& ctx, Access access) const;

 private:
  const std::shared_ptr<TokenStore> tokens_;
  const bool allow_anonymous_reads_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_SERVER_RPC_AUTH_H_
