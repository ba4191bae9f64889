#include "server/store/bucket_json.h"

#include "absl/strings/str_cat.h"
#include "bucketmap/v1/types.pb.h"
#include "codec/codec.h"
#include "google/protobuf/util/json_util.h"

namespace bucketmap {

std::string BucketToJson(const Bucket& bucket) {
  v1::Bucket proto;
  ToProto(bucket, &proto);
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  // Printing a well-formed message cannot fail.
  (void)google::protobuf::util::MessageToJsonString(proto, &json, options);
  return json;
}

absl::StatusOr<Bucket> BucketFromJson(const std::string& json) {
  v1::Bucket proto;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // written by a newer release
  auto status = google::protobuf::util::JsonStringToMessage(json, &proto, options);
  if (!status.ok()) {
    return absl::DataLossError(absl::StrCat("bucket spec is not valid JSON: ", status.ToString()));
  }
  return FromProto(proto);
}

}  // namespace bucketmap
