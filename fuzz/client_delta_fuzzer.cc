// Fuzzes Client::ApplyDeltas with arbitrary bytes parsed as a
// v1::WatchResponse.Push whose deltas are applied on top of a valid base
// mapping (fuzz_util.h) at version kBaseVersion.
//
// When the input's first byte is odd, the deltas' from/to versions are
// rewritten to follow the base one by one, so the fuzzer spends its time
// past the version checks instead of guessing version numbers.
//
// Deltas the client accepts must leave it routing exactly as the domain
// snapshot with the same changes applied; refused ones must leave the base
// mapping in place.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/strings/str_cat.h"
#include "bucketmap/client.h"
#include "bucketmap/v1/mapping.pb.h"
#include "codec/codec.h"
#include "domain/snapshot.h"
#include "fuzz/fuzz_util.h"

namespace {

bucketmap::v1::MappingSnapshot BaseProto() {
  bucketmap::v1::MappingSnapshot proto;
  bucketmap::ToProto(*bucketmap::fuzz::BaseSnapshot(), &proto);
  return proto;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bucketmap;  // NOLINT(build/namespaces): a fuzz entry point
  if (size < 1) return 0;
  const bool fix_versions = (data[0] & 1) != 0;
  v1::WatchResponse::Push push;
  if (!push.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (fix_versions) {
    int64_t v = fuzz::kBaseVersion;
    for (v1::MappingDelta& d : *push.mutable_deltas()) {
      d.set_from_version(v);
      d.set_to_version(++v);
    }
  }

  static const v1::MappingSnapshot* const base = new v1::MappingSnapshot(BaseProto());
  Client client(ClientOptions{});
  fuzz::Check(client.ApplySnapshot(*base).ok(), "the base snapshot is refused");
  const absl::Status applied = client.ApplyDeltas(push.deltas());
  if (!applied.ok()) {
    fuzz::Check(client.version() == fuzz::kBaseVersion, "a refused delta moved the version");
    fuzz::CheckSameRoutes(client, *fuzz::BaseSnapshot());
    return 0;
  }
  // The reference: the domain snapshot with each change applied in turn.
  std::shared_ptr<const Snapshot> expected = fuzz::BaseSnapshot();
  for (int i = 0; i < push.deltas_size(); ++i) {
    auto change = ChangeFromProto(push.deltas(i), absl::StrCat("deltas[", i, "]"));
    fuzz::Check(change.ok(), "the client accepted a delta the decoder refuses");
    auto next = expected->Apply(*change);
    fuzz::Check(next.ok(), "the client accepted a change Snapshot::Apply refuses");
    expected = *std::move(next);
  }
  fuzz::CheckSameRoutes(client, *expected);
  return 0;
}
