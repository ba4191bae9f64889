#include "server/rpc/auth.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "domain/status_macros.h"
#include "openssl/crypto.h"
#include "openssl/sha.h"

namespace bucketmap {
namespace {

constexpr size_t kMaxNameBytes = 64;
constexpr size_t kMaxActorBytes = 128;
constexpr char kActorHeader[] = "x-bucketmap-actor";

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '@' ||
           c == '-';
  });
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool ParseDigest(absl::string_view hex, Sha256Digest* out) {
  if (hex.size() != 2 * out->size()) return false;
  for (size_t i = 0; i < out->size(); ++i) {
    const int hi = HexValue(hex[2 * i]);
    const int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// The token of `authorization: Bearer <token>`; nullopt when the header is
// absent, empty when it is present but not a bearer token.
std::optional<std::string> BearerToken(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return std::nullopt;
  absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(value, kScheme)) {
    return std::string();
  }
  value.remove_prefix(kScheme.size());
  return std::string(absl::StripAsciiWhitespace(value));
}

// Development mode's actor: what the caller names, made printable.
std::string DeclaredActor(const grpc::ServerContextBase& ctx) {
  auto it = ctx.client_metadata().find(kActorHeader);
  if (it == ctx.client_metadata().end() || it->second.empty()) return "anonymous";
  std::string actor(it->second.data(), std::min(it->second.size(), kMaxActorBytes));
  for (char& c : actor) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return actor;
}

}  // namespace

const char* RoleName(Role role) { return role == Role::kAdmin ? "admin" : "reader"; }

Sha256Digest Sha256(absl::string_view data) {
  Sha256Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view contents) {
  std::vector<TokenEntry> entries;
  absl::flat_hash_set<std::string> names;
  absl::flat_hash_set<std::string> hashes;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++line_number;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    auto error = [line_number](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": ", what));
    };
    if (fields.size() != 3) {
      return error(
          absl::StrCat("expected `<name> <role> <sha256-hex>`, got ", fields.size(), " fields"));
    }
    TokenEntry entry;
    if (!ValidName(fields[0])) {
      return error("name: 1 to 64 characters of [A-Za-z0-9._@-]");
    }
    entry.name = std::string(fields[0]);
    if (fields[1] == "reader") {
      entry.role = Role::kReader;
    } else if (fields[1] == "admin") {
      entry.role = Role::kAdmin;
    } else {
      return error(absl::StrCat("role: \"", fields[1], "\" is not reader or admin"));
    }
    // The third field is never echoed: an operator who pasted a token
    // instead of its hash must not find it in the log.
    if (!ParseDigest(fields[2], &entry.hash)) {
      return error("hash: not 64 hex digits (the file holds SHA-256 hashes, not tokens)");
    }
    if (!names.insert(entry.name).second) {
      return error(absl::StrCat("name: \"", entry.name, "\" appears twice"));
    }
    if (!hashes.insert(absl::AsciiStrToLower(fields[2])).second) {
      return error("hash: the same token is listed twice");
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

namespace {

absl::StatusOr<std::vector<TokenEntry>> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--auth_tokens_file ", path, ": cannot read"));
  std::stringstream contents;
  contents << in.rdbuf();
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokenFile(contents.str());
  if (!entries.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens_file ", path, ": ", entries.status().message()));
  }
  return entries;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(std::string path) {
  ASSIGN_OR_RETURN(std::vector<TokenEntry> entries, ReadTokenFile(path));
  return std::unique_ptr<TokenStore>(new TokenStore(std::move(path), std::move(entries)));
}

TokenStore::TokenStore(std::vector<TokenEntry> entries) : TokenStore("", std::move(entries)) {}

TokenStore::TokenStore(std::string path, std::vector<TokenEntry> entries)
    : path_(std::move(path)), table_(std::make_shared<const Table>(std::move(entries))) {}

absl::Status TokenStore::Reload() {
  if (path_.empty()) return absl::FailedPreconditionError("token store has no file");
  absl::StatusOr<std::vector<TokenEntry>> entries = ReadTokenFile(path_);
  if (!entries.ok()) return entries.status();
  auto table = std::make_shared<const Table>(*std::move(entries));
  absl::MutexLock lock(&mu_);
  table_ = std::move(table);
  return absl::OkStatus();
}

std::shared_ptr<const TokenStore::Table> TokenStore::Current() const {
  absl::MutexLock lock(&mu_);
  return table_;
}

std::optional<TokenEntry> TokenStore::Find(absl::string_view token) const {
  const Sha256Digest presented = Sha256(token);
  std::shared_ptr<const Table> table = Current();
  const TokenEntry* found = nullptr;
  for (const TokenEntry& entry : *table) {
    // No early exit: every entry costs the same whether it matches or not.
    if (CRYPTO_memcmp(entry.hash.data(), presented.data(), presented.size()) == 0) {
      found = &entry;
    }
  }
  if (found == nullptr) return std::nullopt;
  return *found;
}

size_t TokenStore::size() const { return Current()->size(); }

Authorizer::Authorizer(std::shared_ptr<TokenStore> tokens, bool allow_anonymous_reads)
    : tokens_(std::move(tokens)), allow_anonymous_reads_(allow_anonymous_reads) {}

absl::StatusOr<Identity> Authorizer::Check(const grpc::ServerContextBase& ctx,
                                           Access access) const {
  if (tokens_ == nullptr) return Identity{DeclaredActor(ctx), std::nullopt};
  std::optional<std::string> token = BearerToken(ctx);
  if (!token.has_value()) {
    if (access == Access::kRead && allow_anonymous_reads_) {
      return Identity{"anonymous", std::nullopt};
    }
    return absl::UnauthenticatedError(
        "authorization: missing; send `authorization: Bearer <token>`");
  }
  if (token->empty()) {
    return absl::UnauthenticatedError("authorization: expected `Bearer <token>`");
  }
  std::optional<TokenEntry> entry = tokens_->Find(*token);
  if (!entry.has_value()) {
    return absl::UnauthenticatedError("authorization: unknown token");
  }
  if (access == Access::kAdmin && entry->role != Role::kAdmin) {
    return absl::PermissionDeniedError(absl::StrCat("token \"", entry->name, "\" has role ",
                                                    RoleName(entry->role),
                                                    "; AdminService needs admin"));
  }
  return Identity{entry->name, entry->role};
}

}  // namespace bucketmap
