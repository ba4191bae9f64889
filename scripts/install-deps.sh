#!/usr/bin/env bash
# Installs the Debian 12 packages that bucketmap needs to build, test and
# run, if any is missing.
#
# As root it runs apt-get itself. As another user it uses sudo when sudo
# exists; otherwise it prints the exact command to run and exits 1.
# Installing `postgresql` may create and start Debian's system cluster on
# port 5432; bucketmap never uses it (scripts/pg.sh runs a private one).
# Likewise `clickhouse-server` (18.16, for tests/clickhouse_e2e) may start
# Debian's system ClickHouse on ports 9000 and 8123; the tests run their
# own (tests/support/clickhouse_harness.h).
# And `etcd-server` (the baseline of bench/fanout_vs_etcd) may start
# Debian's etcd on port 2379; the benchmark starts its own on free ports.
set -euo pipefail

PACKAGES=(
  cmake ninja-build pkg-config g++
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libpqxx-dev librdkafka-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  postgresql kcat libspdlog-dev liburcu-dev libxxhash-dev
  clang-14 libfuzzer-14-dev libclang-rt-14-dev curl
  openssl libssl-dev
  clickhouse-server clickhouse-client
  etcd-server
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

# Node.js and npm for the Node client (clients/node): any node >= 18 with
# its npm will do (a machine may have them from elsewhere, e.g. NodeSource's
# nodejs, which bundles npm); otherwise Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: missing packages: ${missing[*]}" >&2
apt_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"

if ((EUID == 0)); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
elif command -v sudo >/dev/null 2>&1; then
  sudo apt-get update
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
  echo "install-deps: not root and sudo is not installed. As root, run:" >&2
  echo "  $apt_cmd" >&2
  exit 1
fi
