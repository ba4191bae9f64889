// Checks every grpcurl example in README.md and docs/*.md, since grpcurl
// itself cannot be installed here: the command must use grpcurl's real
// flags, name a method (or list/describe a symbol) that exists, and its
// -d JSON must parse into the method's request message with protobuf's
// JSON parser (unknown fields are errors, as in grpcurl).
//
// Examples are taken from fenced code blocks only: a line that starts with
// `grpcurl` (optionally after a `$ ` prompt) begins a command, which is
// split with shell quoting rules, so `\` continuations and multi-line
// single-quoted JSON work.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bucketmap/v1/admin.pb.h"
#include "bucketmap/v1/mapping.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

#ifndef BUCKETMAP_SOURCE_DIR
#error "BUCKETMAP_SOURCE_DIR must name the repository root"
#endif

namespace bucketmap {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::MethodDescriptor;
using google::protobuf::ServiceDescriptor;
using ::testing::ElementsAre;

struct Example {
  std::string where;  // "docs/api.md:12"
  std::vector<std::string> args;
};

// Splits one shell command starting at text[*pos], advancing *pos past
// it. The command ends at an unquoted newline (not escaped by `\`), or at
// `|`, `;`, `&`, `>` or a `#` comment outside quotes. Returns false on an
// unterminated quote.
bool SplitCommand(const std::string& text, size_t* pos, std::vector<std::string>* args) {
  std::string word;
  bool in_word = false;
  size_t i = *pos;
  auto flush = [&] {
    if (in_word) args->push_back(word);
    word.clear();
    in_word = false;
  };
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\\') {
      if (i + 1 < text.size() && text[i + 1] == '\n') {
        i += 2;  // line continuation
        continue;
      }
      if (i + 1 < text.size()) word += text[i + 1];
      in_word = true;
      i += 2;
      continue;
    }
    if (c == '\'') {
      size_t end = text.find('\'', i + 1);
      if (end == std::string::npos) return false;
      word += text.substr(i + 1, end - i - 1);
      in_word = true;
      i = end + 1;
      continue;
    }
    if (c == '"') {
      ++i;
      while (i < text.size() && text[i] != '"') {
        if (text[i] == '\\' && i + 1 < text.size() &&
            std::string("\"\\$`\n").find(text[i + 1]) != std::string::npos) {
          if (text[i + 1] != '\n') word += text[i + 1];
          i += 2;
          continue;
        }
        word += text[i++];
      }
      if (i >= text.size()) return false;
      ++i;
      in_word = true;
      continue;
    }
    if (c == '\n' || c == '|' || c == ';' || c == '&' || c == '>' || (c == '#' && !in_word)) {
      break;
    }
    if (c == ' ' || c == '\t') {
      flush();
      ++i;
      continue;
    }
    word += c;
    in_word = true;
    ++i;
  }
  flush();
  // Skip the rest of the line (a comment or a pipeline).
  while (i < text.size() && text[i] != '\n') ++i;
  *pos = i;
  return true;
}

// Returns the grpcurl commands of the fenced code blocks of `markdown`.
// Unterminated quotes are reported as examples with no arguments.
std::vector<Example> ExtractGrpcurl(const std::string& markdown, const std::string& file) {
  std::vector<Example> out;
  std::vector<std::string> lines = absl::StrSplit(markdown, '\n');
  bool in_fence = false;
  std::string fence;
  size_t fence_indent = 0;
  for (size_t n = 0; n < lines.size(); ++n) {
    absl::string_view stripped = absl::StripLeadingAsciiWhitespace(lines[n]);
    const size_t indent = lines[n].size() - stripped.size();
    if (absl::StartsWith(stripped, "```") || absl::StartsWith(stripped, "~~~")) {
      if (!in_fence) {
        in_fence = true;
        fence = std::string(stripped.substr(0, 3));
        fence_indent = indent;
      } else if (absl::StartsWith(stripped, fence)) {
        in_fence = false;
      }
      continue;
    }
    if (!in_fence) continue;
    // A command starts at the block's margin; deeper text (a diagram that
    // mentions grpcurl) is not a command.
    if (indent > fence_indent + 3) continue;
    absl::ConsumePrefix(&stripped, "$ ");
    if (!absl::StartsWith(stripped, "grpcurl ") && stripped != "grpcurl") continue;
    // The command may continue over the next lines of the block.
    std::string rest = std::string(stripped);
    size_t last = n;
    for (size_t m = n + 1; m < lines.size(); ++m) {
      absl::string_view next = absl::StripLeadingAsciiWhitespace(lines[m]);
      if (absl::StartsWith(next, fence)) break;
      absl::StrAppend(&rest, "\n", lines[m]);
    }
    Example example{absl::StrCat(file, ":", n + 1), {}};
    size_t pos = 0;
    if (!SplitCommand(rest, &pos, &example.args)) example.args.clear();
    // Skip the lines the command used.
    for (size_t i = 0; i < pos && i < rest.size(); ++i) {
      if (rest[i] == '\n') ++last;
    }
    out.push_back(std::move(example));
    n = last;
  }
  return out;
}

// grpcurl's flags (grpcurl -help), split into booleans and flags taking a
// value. An unknown flag fails the example: a reader would copy a typo.
const std::set<std::string>& BoolFlags() {
  static const auto* flags =
      new std::set<std::string>{"plaintext",    "insecure",       "v",
                                "vv",           "emit-defaults",  "allow-unknown-fields",
                                "format-error", "help",           "version",
                                "msg-template", "use-reflection", "expand-headers"};
  return *flags;
}
const std::set<std::string>& ValueFlags() {
  static const auto* flags = new std::set<std::string>{
      "d",          "H",          "rpc-header",      "reflect-header", "import-path",
      "proto",      "protoset",   "protoset-out",    "cacert",         "cert",
      "key",        "authority",  "connect-timeout", "keepalive-time", "max-time",
      "max-msg-sz", "servername", "user-agent",      "format",         "unix"};
  return *flags;
}

// Services that bucketmap-server exposes but whose descriptors are not
// compiled into this test: grpc.health.v1 is built below;
// reflection needs no request JSON in the docs.
constexpr char kHealthProto[] = R"pb(
  name: "grpc/health/v1/health.proto"
  package: "grpc.health.v1"
  syntax: "proto3"
  message_type {
    name: "HealthCheckRequest"
    field { name: "service" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "service" }
  }
  message_type {
    name: "HealthCheckResponse"
    field {
      name: "status"
      number: 1
      label: LABEL_OPTIONAL
      type: TYPE_ENUM
      type_name: ".grpc.health.v1.HealthCheckResponse.ServingStatus"
      json_name: "status"
    }
    enum_type {
      name: "ServingStatus"
      value { name: "UNKNOWN" number: 0 }
      value { name: "SERVING" number: 1 }
      value { name: "NOT_SERVING" number: 2 }
      value { name: "SERVICE_UNKNOWN" number: 3 }
    }
  }
  service {
    name: "Health"
    method {
      name: "Check"
      input_type: ".grpc.health.v1.HealthCheckRequest"
      output_type: ".grpc.health.v1.HealthCheckResponse"
    }
    method {
      name: "Watch"
      input_type: ".grpc.health.v1.HealthCheckRequest"
      output_type: ".grpc.health.v1.HealthCheckResponse"
      server_streaming: true
    }
  }
)pb";

constexpr char kReflectionService[] = "grpc.reflection.v1alpha.ServerReflection";

class Checker {
 public:
  Checker() {
    // Referencing the descriptors links the generated files in, which
    // registers them with the generated pool.
    generated_files_ = {v1::CreateBucketRequest::descriptor()->file()->name(),
                        v1::GetMappingRequest::descriptor()->file()->name()};
    google::protobuf::FileDescriptorProto health;
    if (!google::protobuf::TextFormat::ParseFromString(kHealthProto, &health) ||
        extra_pool_.BuildFile(health) == nullptr) {
      ADD_FAILURE() << "cannot build the grpc.health.v1 descriptor";
    }
  }

  const ServiceDescriptor* FindService(const std::string& name) const {
    const ServiceDescriptor* s = DescriptorPool::generated_pool()->FindServiceByName(name);
    return s != nullptr ? s : extra_pool_.FindServiceByName(name);
  }

  bool SymbolExists(const std::string& name) const {
    if (name == kReflectionService) return true;
    for (const DescriptorPool* pool : {DescriptorPool::generated_pool(), &extra_pool_}) {
      if (pool->FindServiceByName(name) || pool->FindMethodByName(name) ||
          pool->FindMessageTypeByName(name) || pool->FindEnumTypeByName(name)) {
        return true;
      }
    }
    return false;
  }

  // Returns the problems of one example; empty when it is valid. Adds the
  // method it calls to `called`.
  std::vector<std::string> Check(const Example& example, std::set<std::string>* called) {
    std::vector<std::string> problems;
    const std::vector<std::string>& args = example.args;
    if (args.empty()) return {"unterminated quote"};
    std::string data;
    bool has_data = false;
    std::vector<std::string> positional;
    for (size_t i = 1; i < args.size(); ++i) {
      absl::string_view arg = args[i];
      if (!absl::StartsWith(arg, "-") || arg == "-") {
        positional.push_back(args[i]);
        continue;
      }
      absl::ConsumePrefix(&arg, "-");
      absl::ConsumePrefix(&arg, "-");
      std::string name(arg);
      std::string value;
      bool inline_value = false;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        inline_value = true;
      }
      if (BoolFlags().count(name)) continue;
      if (!ValueFlags().count(name)) {
        problems.push_back(absl::StrCat("unknown grpcurl flag -", name));
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= args.size()) {
          problems.push_back(absl::StrCat("-", name, " needs a value"));
          break;
        }
        value = args[++i];
      }
      if (name == "d") {
        data = value;
        has_data = true;
      }
      int64_t size = 0;
      if (name == "max-msg-sz" && !absl::SimpleAtoi(value, &size)) {
        problems.push_back(absl::StrCat("-max-msg-sz takes a number of bytes, got '", value, "'"));
      }
    }
    if (positional.empty()) {
      problems.push_back("no address");
      return problems;
    }
    if (positional.size() < 2) {
      problems.push_back("no method, list or describe after the address");
      return problems;
    }
    const std::string& target = positional[1];
    if (target == "list" || target == "describe") {
      if (positional.size() > 3) problems.push_back("too many arguments");
      if (positional.size() == 3 && !SymbolExists(positional[2])) {
        problems.push_back(absl::StrCat("unknown symbol ", positional[2]));
      }
      if (has_data) problems.push_back("-d with list/describe");
      return problems;
    }
    if (positional.size() > 2) {
      problems.push_back(absl::StrCat("unexpected argument '", positional[2], "'"));
    }
    // grpcurl accepts Service/Method and Service.Method.
    size_t split = target.rfind('/');
    if (split == std::string::npos) split = target.rfind('.');
    if (split == std::string::npos) {
      problems.push_back(absl::StrCat("'", target, "' is not Service/Method"));
      return problems;
    }
    const std::string service_name = target.substr(0, split);
    const std::string method_name = target.substr(split + 1);
    const ServiceDescriptor* service = FindService(service_name);
    if (service == nullptr) {
      problems.push_back(absl::StrCat("unknown service ", service_name));
      return problems;
    }
    const MethodDescriptor* method = service->FindMethodByName(method_name);
    if (method == nullptr) {
      problems.push_back(absl::StrCat("unknown method ", method_name, " of ", service_name));
      return problems;
    }
    called->insert(method->full_name());
    if (absl::StartsWith(data, "@")) {
      problems.push_back("-d @ reads stdin; give the JSON inline so it can be checked");
      return problems;
    }
    const Descriptor* input = method->input_type();
    google::protobuf::MessageFactory* factory =
        input->file()->pool() == DescriptorPool::generated_pool()
            ? google::protobuf::MessageFactory::generated_factory()
            : &factory_;
    std::unique_ptr<google::protobuf::Message> request(factory->GetPrototype(input)->New());
    if (has_data) {
      auto status = google::protobuf::util::JsonStringToMessage(
          data, request.get(), google::protobuf::util::JsonParseOptions());
      if (!status.ok()) {
        problems.push_back(absl::StrCat("-d does not parse as ", input->full_name(), ": ",
                                        status.ToString(), "\n    JSON: ", data));
      } else {
        CheckFieldMasks(*input, data, &problems);
      }
    }
    return problems;
  }

 private:
  // proto3 JSON writes FieldMask paths in lowerCamelCase, and some parsers
  // (protobuf-go's) reject snake_case ones that C++ accepts: examples must
  // use the portable form.
  static void CheckFieldMasks(const Descriptor& input, const std::string& json,
                              std::vector<std::string>* problems) {
    google::protobuf::Struct object;
    if (!google::protobuf::util::JsonStringToMessage(json, &object).ok()) return;
    for (int i = 0; i < input.field_count(); ++i) {
      const google::protobuf::FieldDescriptor* field = input.field(i);
      if (field->message_type() == nullptr ||
          field->message_type()->full_name() != "google.protobuf.FieldMask") {
        continue;
      }
      for (const std::string& key : {field->name(), field->json_name()}) {
        auto it = object.fields().find(key);
        if (it != object.fields().end() && absl::StrContains(it->second.string_value(), "_")) {
          problems->push_back(absl::StrCat(key, ": write FieldMask paths in lowerCamelCase, got \"",
                                           it->second.string_value(), "\""));
        }
      }
    }
  }

  std::vector<std::string> generated_files_;
  DescriptorPool extra_pool_;
  // Messages of extra_pool_.
  google::protobuf::DynamicMessageFactory factory_;
};

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// README.md and docs/*.md, as (relative name, content).
std::vector<std::pair<std::string, std::string>> DocFiles() {
  const fs::path root(BUCKETMAP_SOURCE_DIR);
  std::vector<std::pair<std::string, std::string>> files;
  files.emplace_back("README.md", ReadFile(root / "README.md"));
  std::vector<fs::path> docs;
  if (fs::is_directory(root / "docs")) {
    for (const auto& entry : fs::directory_iterator(root / "docs")) {
      if (entry.path().extension() == ".md") docs.push_back(entry.path());
    }
  }
  std::sort(docs.begin(), docs.end());
  for (const fs::path& doc : docs) {
    files.emplace_back(absl::StrCat("docs/", doc.filename().string()), ReadFile(doc));
  }
  return files;
}

TEST(ExtractGrpcurlTest, HandlesQuotingContinuationsAndPrompts) {
  const std::string markdown =
      "grpcurl -plaintext outside:1 a.B/C\n"
      "```sh\n"
      "$ grpcurl -plaintext -d '{\"a\": 1}' localhost:50051 pkg.S/M\n"
      "grpcurl -plaintext \\\n"
      "  -d '{\n"
      "    \"b\": \"x y\"\n"
      "  }' \\\n"
      "  localhost:50051 pkg.S/N | jq .\n"
      "echo grpcurl not a command\n"
      "        grpcurl / bucketctl  (a diagram)\n"
      "grpcurl -d \"{\\\"c\\\": 2}\" h:1 pkg.S/O  # comment\n"
      "```\n"
      "```\n"
      "grpcurl -d '{\n"
      "```\n";
  std::vector<Example> examples = ExtractGrpcurl(markdown, "x.md");
  ASSERT_EQ(examples.size(), 4u);
  EXPECT_EQ(examples[0].where, "x.md:3");
  EXPECT_THAT(examples[0].args, ElementsAre("grpcurl", "-plaintext", "-d", "{\"a\": 1}",
                                            "localhost:50051", "pkg.S/M"));
  EXPECT_EQ(examples[1].where, "x.md:4");
  EXPECT_THAT(examples[1].args,
              ElementsAre("grpcurl", "-plaintext", "-d", "{\n    \"b\": \"x y\"\n  }",
                          "localhost:50051", "pkg.S/N"));
  EXPECT_EQ(examples[2].where, "x.md:11");
  EXPECT_THAT(examples[2].args, ElementsAre("grpcurl", "-d", "{\"c\": 2}", "h:1", "pkg.S/O"));
  EXPECT_EQ(examples[3].where, "x.md:14");
  EXPECT_TRUE(examples[3].args.empty());  // unterminated quote
}

TEST(CheckerTest, RejectsBadExamples) {
  Checker checker;
  std::set<std::string> called;
  auto problems = [&](std::vector<std::string> args) {
    return absl::StrJoin(checker.Check(Example{"t", std::move(args)}, &called), "; ");
  };
  EXPECT_EQ(problems({"grpcurl", "-plaintext", "-d", R"({"team_id": 1})", "h:1",
                      "bucketmap.v1.MappingService/GetTeam"}),
            "");
  EXPECT_EQ(problems({"grpcurl", "-plaintext", "-d", R"({"teamId": "1"})", "h:1",
                      "bucketmap.v1.MappingService.GetTeam"}),
            "");
  EXPECT_EQ(problems({"grpcurl", "-plaintext", "-d", R"({"service": ""})", "h:1",
                      "grpc.health.v1.Health/Check"}),
            "");
  // FieldMask paths are one lowerCamelCase string in proto JSON.
  EXPECT_EQ(problems({"grpcurl", "-d",
                      R"({"bucket": {"id": 1}, "update_mask": "drainOrder,state", "reason": "r"})",
                      "h:1", "bucketmap.v1.AdminService/UpdateBucket"}),
            "");
  EXPECT_THAT(problems({"grpcurl", "-d", R"({"bucket": {"id": 1}, "update_mask": "drain_order"})",
                        "h:1", "bucketmap.v1.AdminService/UpdateBucket"}),
              ::testing::HasSubstr("write FieldMask paths in lowerCamelCase"));
  EXPECT_EQ(problems({"grpcurl", "-plaintext", "h:1", "list"}), "");
  EXPECT_EQ(problems({"grpcurl", "-plaintext", "h:1", "describe", "bucketmap.v1.Bucket"}), "");
  EXPECT_THAT(problems({"grpcurl", "-plaintext", "-d", R"({"team": 1})", "h:1",
                        "bucketmap.v1.MappingService/GetTeam"}),
              ::testing::HasSubstr("does not parse"));
  EXPECT_THAT(problems({"grpcurl", "-plaintext", "h:1", "bucketmap.v1.MappingService/Nope"}),
              ::testing::HasSubstr("unknown method Nope"));
  EXPECT_THAT(problems({"grpcurl", "-max-msg-size", "5", "h:1", "list"}),
              ::testing::HasSubstr("unknown grpcurl flag -max-msg-size"));
  EXPECT_THAT(problems({"grpcurl", "h:1", "describe", "bucketmap.v1.Nope"}),
              ::testing::HasSubstr("unknown symbol"));
}

TEST(DocsGrpcurlTest, EveryExampleIsValid) {
  Checker checker;
  std::set<std::string> called;
  int examples = 0;
  for (const auto& [name, text] : DocFiles()) {
    for (const Example& example : ExtractGrpcurl(text, name)) {
      ++examples;
      for (const std::string& problem : checker.Check(example, &called)) {
        ADD_FAILURE() << example.where << ": " << problem
                      << "\n  command: " << absl::StrJoin(example.args, " ");
      }
    }
  }
  std::cout << "checked " << examples << " grpcurl examples\n";
  EXPECT_GE(examples, 8) << "expected grpcurl examples in README.md and docs/*.md";

  // docs promise an example of every unary RPC.
  for (const Descriptor* anchor :
       {v1::CreateBucketRequest::descriptor(), v1::GetMappingRequest::descriptor()}) {
    for (int s = 0; s < anchor->file()->service_count(); ++s) {
      const ServiceDescriptor* service = anchor->file()->service(s);
      for (int m = 0; m < service->method_count(); ++m) {
        const MethodDescriptor* method = service->method(m);
        if (method->client_streaming() || method->server_streaming()) continue;
        EXPECT_TRUE(called.count(method->full_name()))
            << "no grpcurl example calls " << method->full_name();
      }
    }
  }
}

}  // namespace
}  // namespace bucketmap
