// bucketctl's handoff commands without a server: cancel-handoff and
// list-handoffs requests, --unordered moves, and the handoff table.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/bucketctl/args.h"
#include "tools/bucketctl/commands.h"
#include "tools/bucketctl/format.h"

namespace bucketmap::bucketctl {
namespace {

using ::testing::HasSubstr;

ParsedArgs Parse(const std::string& command, const std::vector<std::string>& args) {
  const CommandSpec* spec = FindCommand(command);
  EXPECT_NE(spec, nullptr) << command;
  if (spec == nullptr) return ParsedArgs();
  std::vector<FlagSpec> specs = spec->flags;
  specs.insert(specs.end(), GlobalFlags().begin(), GlobalFlags().end());
  absl::StatusOr<ParsedArgs> parsed = ParseArgs(args, specs, false);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : ParsedArgs();
}

TEST(BucketctlHandoffTest, CancelHandoffBuildsAWriteWithAReason) {
  auto request = BuildCancelHandoff(Parse("cancel-handoff", {"7", "--reason", "stuck"}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->handoff_id(), 7);
  EXPECT_EQ(request->reason(), "stuck");
  EXPECT_THAT(BuildCancelHandoff(Parse("cancel-handoff", {"7"})).status().message(),
              HasSubstr("--reason is required"));
  EXPECT_THAT(
      BuildCancelHandoff(Parse("cancel-handoff", {"x", "--reason", "r"})).status().message(),
      HasSubstr("HANDOFF_ID"));
}

TEST(BucketctlHandoffTest, ListHandoffsFlagsAndUnorderedMoves) {
  auto list = BuildListHandoffs(Parse("list-handoffs", {"--include-ended", "--team", "42"}));
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->include_ended());
  EXPECT_EQ(list->team_id(), 42);
  std::string bucket_name;
  auto assign = BuildAssignTeam(
      Parse("assign", {"5", "--bucket", "2", "--unordered", "--reason", "fire"}), &bucket_name);
  ASSERT_TRUE(assign.ok());
  EXPECT_TRUE(assign->has_ordered());
  EXPECT_FALSE(assign->ordered());
  assign =
      BuildAssignTeam(Parse("assign", {"5", "--bucket", "2", "--reason", "calm"}), &bucket_name);
  ASSERT_TRUE(assign.ok());
  EXPECT_FALSE(assign->has_ordered());  // the server's default: ordered
}

TEST(BucketctlHandoffTest, HandoffTableShowsPhaseDrainAndMissingProducers) {
  v1::ListHandoffsResponse response;
  v1::Handoff* h = response.add_handoffs();
  h->set_id(3);
  h->set_opened_version(10);
  h->set_source_bucket_id(1);
  h->add_target_bucket_ids(2);
  h->add_team_ids(42);
  h->add_to_bucket_ids(2);
  h->set_state(v1::HANDOFF_DRAINING);
  h->set_ordered(true);
  v1::RoleDrain* d = h->add_drains();
  d->set_role("ingestion");
  d->add_end_offsets(5);
  d->set_lag(4);
  h->add_missing_producers("p-1");
  const std::string table = FormatHandoffs(response);
  EXPECT_THAT(table, HasSubstr("DRAINING"));
  EXPECT_THAT(table, HasSubstr("ingestion lag 4"));
  EXPECT_THAT(table, HasSubstr("p-1"));
  v1::CancelHandoffRequest request;
  request.set_handoff_id(3);
  v1::CancelHandoffResponse cancelled;
  cancelled.set_version(12);
  cancelled.mutable_handoff()->set_id(3);
  cancelled.mutable_handoff()->set_source_bucket_id(1);
  EXPECT_EQ(FormatCancelHandoff(request, cancelled),
            "version 12: handoff 3 from bucket 1 cancelled\n");
}

}  // namespace
}  // namespace bucketmap::bucketctl
