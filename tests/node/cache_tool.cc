// node_cache_tool: the C++ side of the Node client's cross-language tests
// (tests/node/run_node_tests.sh, clients/node/test/server/cache.test.ts).
// It uses the C++ client library exactly as a producer would, so the Node
// tests can check that either library reads the other's cache file and
// that both route alike.
//
//   node_cache_tool fetch ADDRESS CACHE_PATH
//       GetMapping from the server, Client::ApplySnapshot, WriteCache;
//       prints "version V".
//   node_cache_tool dump CACHE_PATH TEAM...
//       Client::LoadCache, then prints
//         version V cluster C confirmed_ms MS
//       and per team (decimal, int64)
//         route TEAM BUCKET STATUS SOURCE POOL HANDOFF OPEN_HANDOFF_IDS
//       STATUS, SOURCE numeric as in RouteResult; POOL "-" for none;
//       OPEN_HANDOFF_IDS comma-separated, "-" for none.
//   node_cache_tool placement BUCKET:WEIGHT...
//       prints the bucket of each of the 65,536 slots, one per line.
// Exit status 0, or 1 with the error on stderr.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bucketmap/client.h"
#include "bucketmap/v1/mapping.grpc.pb.h"
#include "domain/placement.h"
#include "grpcpp/create_channel.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "node_cache_tool: %s\n", message.c_str());
  return 1;
}

int Fetch(const std::string& address, const std::string& path) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = bucketmap::v1::MappingService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  bucketmap::v1::MappingSnapshot snapshot;
  grpc::Status s = stub->GetMapping(&ctx, bucketmap::v1::GetMappingRequest(), &snapshot);
  if (!s.ok()) return Fail("GetMapping: " + s.error_message());
  bucketmap::ClientOptions options;
  options.client_id = "node-cache-tool";
  options.cache_path = path;
  bucketmap::Client client(options);
  if (absl::Status a = client.ApplySnapshot(snapshot); !a.ok()) return Fail(a.ToString());
  if (absl::Status w = client.WriteCache(); !w.ok()) return Fail(w.ToString());
  std::printf("version %lld\n", static_cast<long long>(client.version()));
  return 0;
}

int Dump(const std::string& path, const std::vector<std::string>& teams) {
  bucketmap::ClientOptions options;
  options.client_id = "node-cache-tool";
  options.cache_path = path;
  bucketmap::Client client(options);
  if (absl::Status s = client.LoadCache(); !s.ok()) return Fail(s.ToString());
  std::shared_ptr<const bucketmap::MappingView> view = client.Current();
  const absl::Time confirmed = absl::Now() - client.Staleness();
  std::printf("version %lld cluster %s confirmed_ms %lld\n",
              static_cast<long long>(view->version()), view->cluster_id().c_str(),
              static_cast<long long>(absl::ToUnixMillis(confirmed)));
  for (const std::string& arg : teams) {
    int64_t team = 0;
    if (!absl::SimpleAtoi(arg, &team)) return Fail("bad team id " + arg);
    const bucketmap::RouteResult r = view->Route(team);
    const std::string_view pool = view->PoolName(r.pool_index());
    std::string ids;
    for (const bucketmap::TeamHandoff& h : view->HandoffState(team).handoffs) {
      if (!ids.empty()) ids += ",";
      ids += std::to_string(h.handoff_id);
    }
    std::printf("route %lld %d %d %d %s %d %s\n", static_cast<long long>(team), r.bucket_id(),
                static_cast<int>(r.status()), static_cast<int>(r.source()),
                pool.empty() ? "-" : std::string(pool).c_str(), r.handoff() ? 1 : 0,
                ids.empty() ? "-" : ids.c_str());
  }
  return 0;
}

int Placement(const std::vector<std::string>& members) {
  std::vector<bucketmap::PlacementMember> m;
  for (const std::string& arg : members) {
    std::vector<std::string> parts = absl::StrSplit(arg, ':');
    int32_t bucket = 0, weight = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &bucket) ||
        !absl::SimpleAtoi(parts[1], &weight)) {
      return Fail("bad member " + arg);
    }
    m.push_back({bucket, weight});
  }
  const bucketmap::PlacementTable table = bucketmap::PlacementTable::Build(m);
  std::string out;
  out.reserve(bucketmap::kSlotCount * 8);
  for (uint32_t s = 0; s < static_cast<uint32_t>(bucketmap::kSlotCount); ++s) {
    out += std::to_string(table.BucketForSlot(s));
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 3 && args[0] == "fetch") return Fetch(args[1], args[2]);
  if (args.size() >= 2 && args[0] == "dump") {
    return Dump(args[1], std::vector<std::string>(args.begin() + 2, args.end()));
  }
  if (!args.empty() && args[0] == "placement") {
    return Placement(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  return Fail("usage: node_cache_tool fetch ADDRESS CACHE | dump CACHE TEAM... | placement B:W...");
}
