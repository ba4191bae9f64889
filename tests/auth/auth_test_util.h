// Helpers for the auth and TLS tests: token-file lines, and a throwaway
// CA with server and client certificates made by the `openssl` CLI at test
// time (keys are never committed).
#ifndef BUCKETMAP_TESTS_AUTH_AUTH_TEST_UTIL_H_
#define BUCKETMAP_TESTS_AUTH_AUTH_TEST_UTIL_H_

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/auth.h"

namespace bucketmap {

inline std::string HexOf(const Sha256Digest& digest) {
  std::string hex;
  for (uint8_t b : digest) absl::StrAppend(&hex, absl::Hex(b, absl::kZeroPad2));
  return hex;
}

// "<name> <role> <sha256-hex(token)>\n", as an operator would write it.
inline std::string TokenLine(const std::string& name, const std::string& role,
                             const std::string& token) {
  return absl::StrCat(name, " ", role, " ", HexOf(Sha256(token)), "\n");
}

inline void WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

struct TestCerts {
  std::string ca;           // the CA that signed server and client
  std::string server_cert;  // CN=localhost, SAN localhost and 127.0.0.1
  std::string server_key;
  std::string client_cert;  // signed by `ca`
  std::string client_key;
  std::string rogue_cert;  // signed by another CA
  std::string rogue_key;
};

// Makes the certificates in `dir` (which must exist). Internal with the
// failing command when openssl fails.
inline absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir) {
  const std::string log = dir + "/openssl.log";
  auto run = [&](const std::string& command) -> absl::Status {
    const std::string full = absl::StrCat("cd '", dir, "' && ", command, " >>'", log, "' 2>&1");
    if (std::system(full.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("failed: ", command, " (see ", log, ")"));
    }
    return absl::OkStatus();
  };
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  auto ca = [&](const std::string& name) {
    return run(absl::StrCat("openssl req -x509 ", key, " -keyout ", name, ".key -out ", name,
                            ".pem -days 2 -subj /CN=", name));
  };
  auto leaf = [&](const std::string& name, const std::string& issuer, const std::string& ext) {
    WriteTextFile(absl::StrCat(dir, "/", name, ".ext"), ext);
    absl::Status s = run(absl::StrCat("openssl req ", key, " -keyout ", name, ".key -out ", name,
                                      ".csr -subj /CN=", name == "server" ? "localhost" : name));
    if (!s.ok()) return s;
    return run(absl::StrCat("openssl x509 -req -in ", name, ".csr -CA ", issuer, ".pem -CAkey ",
                            issuer, ".key -CAcreateserial -days 2 -out ", name, ".pem -extfile ",
                            name, ".ext"));
  };
  for (absl::Status s :
       {ca("test-ca"), ca("rogue-ca"),
        leaf("server", "test-ca",
             "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        leaf("client", "test-ca", "extendedKeyUsage=clientAuth\n"),
        leaf("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n")}) {
    if (!s.ok()) return s;
  }
  TestCerts certs;
  certs.ca = dir + "/test-ca.pem";
  certs.server_cert = dir + "/server.pem";
  certs.server_key = dir + "/server.key";
  certs.client_cert = dir + "/client.pem";
  certs.client_key = dir + "/client.key";
  certs.rogue_cert = dir + "/rogue.pem";
  certs.rogue_key = dir + "/rogue.key";
  return certs;
}

}  // namespace bucketmap

#endif  // BUCKETMAP_TESTS_AUTH_AUTH_TEST_UTIL_H_
