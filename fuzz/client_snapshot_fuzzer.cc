// Fuzzes Client::ApplySnapshot with arbitrary bytes parsed as a
// v1::MappingSnapshot, as a watch stream's Push would deliver it.
//
// A snapshot the client accepts must route every team exactly as the
// domain's reference Snapshot::RouteOf() does; one it refuses must leave
// the client without a mapping. Either way nothing may crash, leak or hit
// undefined behaviour (the target is built with ASan and UBSan).
#include <cstddef>
#include <cstdint>

#include "bucketmap/client.h"
#include "bucketmap/v1/types.pb.h"
#include "codec/codec.h"
#include "domain/snapshot.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bucketmap;  // NOLINT(build/namespaces): a fuzz entry point
  v1::MappingSnapshot proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;

  Client client(ClientOptions{});
  const absl::Status applied = client.ApplySnapshot(proto);
  if (!applied.ok()) {
    fuzz::Check(client.Current() == nullptr, "a refused snapshot was published");
    fuzz::Check(!applied.message().empty(), "an error without a message");
    return 0;
  }
  // The reference: the same decoding, then the domain's own routing.
  auto state = StateFromProto(proto);
  fuzz::Check(state.ok(), "the client accepted what the decoder refuses");
  auto expected = Snapshot::Build(*std::move(state));
  fuzz::Check(expected.ok(), "the client accepted what Snapshot::Build refuses");
  fuzz::CheckSameRoutes(client, **expected);
  return 0;
}
