#include "server/base/request_checks.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "domain/validation.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "grpcpp/support/slice.h"

namespace bucketmap {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::Status CheckText(std::string_view value, const std::string& path) {
  if (value.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": must not contain NUL bytes"));
  }
  if (!IsValidUtf8(value)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": must be valid UTF-8"));
  }
  return absl::OkStatus();
}

std::string Join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : absl::StrCat(prefix, ".", name);
}

absl::Status CheckMessage(const Message& message, const std::string& prefix);

// A map entry is a message with fields `key` (1) and `value` (2): its path
// is `field[key]`.
absl::Status CheckMapEntry(const Message& entry, const std::string& field) {
  const Reflection* r = entry.GetReflection();
  const FieldDescriptor* key = entry.GetDescriptor()->map_key();
  const FieldDescriptor* value = entry.GetDescriptor()->map_value();
  std::string key_text;
  if (key->type() == FieldDescriptor::TYPE_STRING) {
    key_text = r->GetString(entry, key);
    if (absl::Status s = CheckText(key_text, absl::StrCat(field, " key")); !s.ok()) return s;
  } else {
    switch (key->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        key_text = absl::StrCat(r->GetInt32(entry, key));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        key_text = absl::StrCat(r->GetInt64(entry, key));
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        key_text = absl::StrCat(r->GetUInt32(entry, key));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        key_text = absl::StrCat(r->GetUInt64(entry, key));
        break;
      default:
        key_text = r->GetBool(entry, key) ? "true" : "false";
    }
  }
  const std::string path = KeyPath(field, key_text);
  if (value->type() == FieldDescriptor::TYPE_STRING)
    return CheckText(r->GetString(entry, value), path);
  if (value->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return CheckMessage(r->GetMessage(entry, value), path);
  }
  return absl::OkStatus();
}

absl::Status CheckMessage(const Message& message, const std::string& prefix) {
  const Reflection* r = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(message, &fields);  // only the fields that are set
  for (const FieldDescriptor* f : fields) {
    const std::string path = Join(prefix, f->name());
    const bool text = f->type() == FieldDescriptor::TYPE_STRING;
    const bool nested = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (!text && !nested) continue;
    if (f->is_map()) {
      for (int i = 0; i < r->FieldSize(message, f); ++i) {
        if (absl::Status s = CheckMapEntry(r->GetRepeatedMessage(message, f, i), path); !s.ok()) {
          return s;
        }
      }
    } else if (f->is_repeated()) {
      for (int i = 0; i < r->FieldSize(message, f); ++i) {
        const std::string element = absl::StrCat(path, "[", i, "]");
        absl::Status s = text ? CheckText(r->GetRepeatedString(message, f, i), element)
                              : CheckMessage(r->GetRepeatedMessage(message, f, i), element);
        if (!s.ok()) return s;
      }
    } else {
      absl::Status s = text ? CheckText(r->GetString(message, f), path)
                            : CheckMessage(r->GetMessage(message, f), path);
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckRequestStrings(const Message& request) { return CheckMessage(request, ""); }

bool ParseRequestBody(const grpc::ByteBuffer& body, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!body.Dump(&slices).ok()) return false;
  if (slices.size() == 1) {
    return message->ParseFromArray(slices[0].begin(), static_cast<int>(slices[0].size()));
  }
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return message->ParseFromString(bytes);
}

grpc::Status UnparseableRequest() {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "request: cannot parse the body as this method's request message");
}

}  // namespace bucketmap
