// The client library against a real server: WatchConnection keeps a
// Client current, resumes after restarts, starts from its cache file while
// no server answers, tries several addresses and resets on a new cluster.
#include <filesystem>

#include "bucketmap/client.h"
#include "bucketmap/watch.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"

namespace bucketmap {
namespace {

class ClientWatchTest : public ServerFixture {
 protected:
  ClientOptions ClientOpts(const std::string& id) {
    ClientOptions options;
    options.addresses = {absl::StrCat("127.0.0.1:", server_->port())};
    options.client_id = id;
    options.role = v1::PRODUCER;
    options.cache_path = pg_->dir() + "/" + id + ".cache";
    return options;
  }

  static WatchConnectionOptions Fast() {
    WatchConnectionOptions options;
    options.initial_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(200);
    return options;
  }
};

TEST_F(ClientWatchTest, FollowsWritesAndRoutesLikeTheServer) {
  const int32_t b1 = MakeBucket("b1");
  const int32_t b2 = MakeBucket("b2");
  Client client(ClientOpts("producer-a"));
  WatchConnection connection(&client, Fast());
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(2, absl::Seconds(10)));
  ASSERT_TRUE(Pin(42, b2).ok());
  ASSERT_TRUE(client.WaitForVersion(3, absl::Seconds(10)));
  EXPECT_EQ(client.Route(42).bucket_id(), b2);
  EXPECT_EQ(client.Route(42).source(), RouteSource::kPin);
  for (int64_t team = 1; team <= 200; ++team) {
    v1::GetTeamRequest req;
    req.set_team_id(team);
    v1::TeamRoute route;
    ASSERT_TRUE(mapping_->GetTeam(Ctx().get(), req, &route).ok());
    EXPECT_EQ(client.Route(team).bucket_id(), route.bucket_id()) << team;
  }
  EXPECT_TRUE(client.Route(7).bucket_id() == b1 || client.Route(7).bucket_id() == b2);
  // The cache file was written before the ACK.
  EXPECT_TRUE(std::filesystem::exists(client.options().cache_path));
}

TEST_F(ClientWatchTest, ResumesAfterServerRestartWithDeltas) {
  const int32_t b1 = MakeBucket("b1");
  Client client(ClientOpts("producer-b"));
  WatchConnection connection(&client, Fast());
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(1, absl::Seconds(10)));
  const int64_t streams = connection.streams_opened();
  StopServer();
  // The same address, so the client's stays valid.
  StartServer(client.options().addresses[0]);
  ASSERT_TRUE(Pin(5, b1).ok());
  ASSERT_TRUE(client.WaitForVersion(2, absl::Seconds(10)));
  EXPECT_GT(connection.streams_opened(), streams);
  EXPECT_EQ(client.Route(5).bucket_id(), b1);
}

TEST_F(ClientWatchTest, StartsFromCacheWhileServerIsDownThenCatchesUp) {
  const int32_t b1 = MakeBucket("b1");
  ASSERT_TRUE(Pin(9, b1).ok());
  ClientOptions options = ClientOpts("producer-c");
  {
    Client client(options);
    WatchConnection connection(&client, Fast());
    connection.Start();
    ASSERT_TRUE(client.WaitForVersion(2, absl::Seconds(10)));
  }
  // Nothing answers at the first address; the second one is the server.
  options.addresses = {"127.0.0.1:1", options.addresses[0]};
  StopServer();
  Client client(options);
  WatchConnection connection(&client, Fast());
  connection.Start();
  EXPECT_EQ(client.version(), 2);  // from the cache file
  EXPECT_EQ(client.Route(9).bucket_id(), b1);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_GE(client.Staleness(), absl::Milliseconds(300));
  EXPECT_FALSE(connection.synced());

  StartServer(options.addresses[1]);
  ASSERT_TRUE(Pin(10, b1).ok());
  ASSERT_TRUE(client.WaitForVersion(3, absl::Seconds(10)));
  EXPECT_LT(client.Staleness(), absl::Seconds(5));
}

TEST_F(ClientWatchTest, ANewClusterResetsTheClient) {
  const int32_t b1 = MakeBucket("b1");
  ASSERT_TRUE(Pin(1, b1).ok());
  ClientOptions options = ClientOpts("consumer-d");
  Client client(options);
  std::atomic<bool> reset{false};
  client.OnChange([&](const ChangeEvent& e) {
    if (e.reset) reset = true;
  });
  WatchConnection connection(&client, Fast());
  connection.Start();
  ASSERT_TRUE(client.WaitForVersion(2, absl::Seconds(10)));
  const std::string first_cluster = client.cluster_id();

  // The database is replaced: a fresh one, with another cluster_id, behind
  // the same address.
  StopServer();
  ASSERT_TRUE(pg_->CreateDatabase("replaced").ok());
  StartServer(options.addresses[0], pg_->url_for("replaced"));
  for (int i = 0; i < 200 && !reset; ++i) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(reset);
  EXPECT_NE(client.cluster_id(), first_cluster);
  EXPECT_EQ(client.version(), 0);
  EXPECT_FALSE(client.Route(1).routable());  // the new cluster has no bucket
}

}  // namespace
}  // namespace bucketmap
