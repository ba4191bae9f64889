# bucketmap-server and bucketctl on Debian 12, in two stages: a build stage
# with the -dev packages, and a runtime stage with only the shared
# libraries and the migrations. Used by docker-compose.yml.
#
# NOT RUN: this file was written on a machine without a Docker engine and
# has never been built. See docs/operations.md, "Docker Compose".

FROM debian:12 AS build
# The build packages of scripts/install-deps.sh, minus what only tests,
# sanitizers, benchmarks and the development run need (PostgreSQL, etcd,
# clang, kcat, curl).
# The top-level CMakeLists.txt finds GTest and benchmark unconditionally,
# so their -dev packages stay.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake ninja-build pkg-config g++ \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev libpqxx-dev librdkafka-dev prometheus-cpp-dev \
      libgtest-dev libgmock-dev libbenchmark-dev \
      libspdlog-dev liburcu-dev libxxhash-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && ninja -C /build bucketmap-server bucketctl

FROM debian:12-slim AS runtime
# The shared libraries bucketmap-server and bucketctl link (Debian 12
# package names; `ldd` on a build of this tree lists them).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      libabsl20220623 libgrpc++1.51 libgrpc29 libprotobuf32 \
      libpqxx-6.4 libpq5 librdkafka1 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libspdlog1.10 libfmt9 libxxhash0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin bucketmap
COPY --from=build /build/server/bucketmap-server /usr/bin/bucketmap-server
COPY --from=build /build/tools/bucketctl/bucketctl /usr/bin/bucketctl
COPY migrations/ /usr/share/bucketmap/migrations/
USER bucketmap
EXPOSE 50051 9464
# Ready when it answers a read: PostgreSQL connected and the mapping loaded
# (the same check scripts/run.sh makes).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=6 \
  CMD ["bucketctl", "--server", "127.0.0.1:50051", "--timeout", "2", "list-buckets"]
ENTRYPOINT ["/usr/bin/bucketmap-server"]
CMD ["--grpc_listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9464", \
     "--migrations_dir=/usr/share/bucketmap/migrations"]
