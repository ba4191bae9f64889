// Wire compatibility with the previous release's protos (SPEC §7: proto
// fields are never renumbered or reused). The previous release's
// bucketmap.v1 files are committed as a FileDescriptorSet
// (tests/testdata/upgrade/release_<rev>_protos.pb, made by
// capture_release.sh); this test compares them with the descriptors
// compiled into this build:
//   - every message, enum and service of the old set still exists;
//   - every old field number still has a field of the same name, type,
//     cardinality and oneof, or is reserved (a field may be deleted only
//     by reserving its number);
//   - numbers the old release reserved are not used by a field now,
//     except the documented claims below;
//   - every old enum value keeps its number and name, or is reserved;
//   - every old RPC keeps its request and response types and streaming.
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <tuple>

#include "bucketmap/v1/admin.pb.h"
#include "bucketmap/v1/events.pb.h"
#include "bucketmap/v1/mapping.pb.h"
#include "bucketmap/v1/types.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "gtest/gtest.h"

namespace bucketmap {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::DescriptorPool;
using ::google::protobuf::DescriptorProto;
using ::google::protobuf::EnumDescriptor;
using ::google::protobuf::EnumDescriptorProto;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::FieldDescriptorProto;
using ::google::protobuf::FileDescriptorSet;

// Numbers the previous release reserved *for* a planned field, which this
// release adds under that plan: (message, number, field name). A number
// reserved because a field was deleted never goes here.
const std::set<std::tuple<std::string, int, std::string>> kPlannedClaims = {
    // 13bf497 reserved 11..19 of the event oneof for the handoff kinds
    // (events.proto); the handoff work (issue 5) adds the first one.
    {"bucketmap.v1.ChangeEvent", 11, "handoff_changed"},
};

FileDescriptorSet LoadPrevious() {
  FileDescriptorSet set;
  std::ifstream in(BUCKETMAP_PREVIOUS_PROTOS, std::ios::binary);
  EXPECT_TRUE(in.good()) << BUCKETMAP_PREVIOUS_PROTOS;
  std::stringstream bytes;
  bytes << in.rdbuf();
  EXPECT_TRUE(set.ParseFromString(bytes.str())) << BUCKETMAP_PREVIOUS_PROTOS;
  return set;
}

const DescriptorPool& Current() {
  // Referencing one message of each file links its descriptor in.
  (void)v1::Bucket::descriptor();
  (void)v1::GetMappingRequest::descriptor();
  (void)v1::CreateBucketRequest::descriptor();
  (void)v1::ChangeEvent::descriptor();
  return *DescriptorPool::generated_pool();
}

bool IsReserved(const Descriptor& d, int number) {
  for (int i = 0; i < d.reserved_range_count(); ++i) {
    const Descriptor::ReservedRange* r = d.reserved_range(i);
    if (number >= r->start && number < r->end) return true;
  }
  return false;
}

void CheckEnum(const std::string& full_name, const EnumDescriptorProto& old) {
  const EnumDescriptor* cur = Current().FindEnumTypeByName(full_name);
  ASSERT_NE(cur, nullptr) << "enum " << full_name << " was removed";
  for (const auto& value : old.value()) {
    const auto* now = cur->FindValueByNumber(value.number());
    if (now == nullptr) {
      bool reserved = false;
      for (int i = 0; i < cur->reserved_range_count(); ++i) {
        const auto* r = cur->reserved_range(i);
        reserved |= value.number() >= r->start && value.number() <= r->end;  // inclusive
      }
      EXPECT_TRUE(reserved) << full_name << " value " << value.number() << " (" << value.name()
                            << ") was removed without reserving its number";
      continue;
    }
    EXPECT_EQ(now->name(), value.name()) << full_name << " value " << value.number();
  }
}

void CheckMessage(const std::string& full_name, const DescriptorProto& old) {
  const Descriptor* cur = Current().FindMessageTypeByName(full_name);
  ASSERT_NE(cur, nullptr) << "message " << full_name << " was removed";
  for (const FieldDescriptorProto& f : old.field()) {
    const std::string where = full_name + " field " + std::to_string(f.number());
    const FieldDescriptor* now = cur->FindFieldByNumber(f.number());
    if (now == nullptr) {
      EXPECT_TRUE(IsReserved(*cur, f.number()))
          << where << " (" << f.name() << ") was removed without reserving its number";
      continue;
    }
    EXPECT_EQ(now->name(), f.name()) << where << " was renamed";
    EXPECT_EQ(static_cast<int>(now->type()), static_cast<int>(f.type()))
        << where << " (" << f.name() << ") changed type";
    EXPECT_EQ(now->is_repeated(), f.label() == FieldDescriptorProto::LABEL_REPEATED)
        << where << " (" << f.name() << ") changed cardinality";
    if (now->message_type() != nullptr) {
      EXPECT_EQ("." + now->message_type()->full_name(), f.type_name()) << where;
    }
    if (now->enum_type() != nullptr) {
      EXPECT_EQ("." + now->enum_type()->full_name(), f.type_name()) << where;
    }
    const bool old_in_oneof = f.has_oneof_index() && !f.proto3_optional();
    const auto* oneof = now->real_containing_oneof();
    EXPECT_EQ(oneof != nullptr, old_in_oneof) << where << " moved into or out of a oneof";
    if (oneof != nullptr && old_in_oneof) {
      EXPECT_EQ(oneof->name(), old.oneof_decl(f.oneof_index()).name()) << where;
    }
  }
  for (const auto& range : old.reserved_range()) {
    for (int n = range.start(); n < range.end(); ++n) {
      const FieldDescriptor* now = cur->FindFieldByNumber(n);
      if (now == nullptr) continue;
      EXPECT_TRUE(kPlannedClaims.count({full_name, n, now->name()}) > 0)
          << full_name << " reuses reserved number " << n << " for " << now->name();
    }
  }
  for (const std::string& name : old.reserved_name()) {
    EXPECT_EQ(cur->FindFieldByName(name), nullptr)
        << full_name << " reuses the reserved name " << name;
  }
  for (const DescriptorProto& nested : old.nested_type()) {
    if (nested.options().map_entry()) continue;  // checked through its map field
    CheckMessage(full_name + "." + nested.name(), nested);
  }
  for (const EnumDescriptorProto& e : old.enum_type()) CheckEnum(full_name + "." + e.name(), e);
}

TEST(ProtoCompatTest, PreviousReleaseMessagesKeepEveryFieldNumberNameAndType) {
  const FileDescriptorSet previous = LoadPrevious();
  int messages = 0;
  for (const auto& file : previous.file()) {
    ASSERT_EQ(file.package(), "bucketmap.v1") << file.name();
    for (const DescriptorProto& m : file.message_type()) {
      CheckMessage(file.package() + "." + m.name(), m);
      ++messages;
    }
    for (const EnumDescriptorProto& e : file.enum_type())
      CheckEnum(file.package() + "." + e.name(), e);
  }
  EXPECT_GT(messages, 20) << "the previous release's descriptor set looks truncated";
}

TEST(ProtoCompatTest, PreviousReleaseRpcsKeepTheirTypes) {
  const FileDescriptorSet previous = LoadPrevious();
  for (const auto& file : previous.file()) {
    for (const auto& service : file.service()) {
      const std::string name = file.package() + "." + service.name();
      const auto* cur = Current().FindServiceByName(name);
      ASSERT_NE(cur, nullptr) << "service " << name << " was removed";
      for (const auto& method : service.method()) {
        const auto* now = cur->FindMethodByName(method.name());
        ASSERT_NE(now, nullptr) << name << "." << method.name() << " was removed";
        EXPECT_EQ("." + now->input_type()->full_name(), method.input_type()) << method.name();
        EXPECT_EQ("." + now->output_type()->full_name(), method.output_type()) << method.name();
        EXPECT_EQ(now->client_streaming(), method.client_streaming()) << method.name();
        EXPECT_EQ(now->server_streaming(), method.server_streaming()) << method.name();
      }
    }
  }
}

}  // namespace
}  // namespace bucketmap
