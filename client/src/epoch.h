// The client's epoch-based reclamation (EBR): the reclaiming side, and the
// out-of-line parts of the read side (bucketmap/internal/read_path.h).
//
// How it works.
//   - A reader enters a section by storing the global epoch into its own
//     record, loads the published pointer, reads, and stores 0 on exit.
//   - A writer unpublishes an object (an atomic exchange of the published
//     pointer), then Retire()s it: the global epoch is advanced and the
//     object tagged with the new value. Retire() never waits.
//   - Reclaim() frees every retired object that no reader can still hold:
//     after one membarrier(), it scans the records, and frees objects whose
//     tag is at most the smallest epoch of a reader inside a section. A
//     reader that is outside, or that entered at the tag's epoch or later,
//     loaded the pointer after the exchange (the epoch it read was written
//     after the exchange, and it loads the pointer after reading it), so it
//     cannot hold the object. Reclaim() never waits for readers either: an
//     object still possibly held stays retired until a later Reclaim().
//   - membarrier() makes every reading thread execute a full fence during
//     the call, so a reader's entry store is visible to the scan unless the
//     reader's pointer load came after that fence, when it sees the new
//     pointer. Readers thus need only a compiler barrier. Where the kernel
//     lacks membarrier's expedited command, the global command (slower, on
//     the writer only) or an mprotect() TLB shoot-down stands in.
//
// ThreadSanitizer sees these edges without help: entry and exit stores are
// releases, the scan's loads acquires, and the epoch an acquire/RMW chain.
//
// Thread safety: every function may be called from any thread, except that
// EpochReadSection is per thread and Reclaim()/WaitForReclaim() must not be
// called inside a section.
#ifndef BUCKETMAP_CLIENT_SRC_EPOCH_H_
#define BUCKETMAP_CLIENT_SRC_EPOCH_H_

#include <cstddef>

#include "bucketmap/internal/read_path.h"

namespace bucketmap {
namespace client_internal {

// Returns a record for the calling thread, which has none (t_epoch_reader
// is nullptr). Normally the record stays the thread's until it exits
// (*temporary = false). A thread already past its exit-time unregistration
// (a read from another thread_local's destructor) gets a record for one
// section (*temporary = true) and must ReleaseReader() it after.
// Takes the registry lock and may allocate.
EpochReader* AcquireReaderSlow(bool* temporary);
void ReleaseReader(EpochReader* reader);

// A read-side section for the lifetime of the object, registering the
// thread first if needed. The out-of-line form, for reads other than the
// inline Route().
class EpochReadSection {
 public:
  EpochReadSection() : reader_(t_epoch_reader) {
    if (ABSL_PREDICT_FALSE(reader_ == nullptr)) reader_ = AcquireReaderSlow(&temporary_);
    reader_->Enter();
  }
  ~EpochReadSection() {
    reader_->Exit();
    if (ABSL_PREDICT_FALSE(temporary_)) ReleaseReader(reader_);
  }
  EpochReadSection(const EpochReadSection&) = delete;
  EpochReadSection& operator=(const EpochReadSection&) = delete;

 private:
  EpochReader* reader_;
  bool temporary_ = false;
};

// Hands `object` to the reclaimer: `reclaim(object)` runs, on the thread of
// some later Reclaim() or WaitForReclaim(), once no reader can hold it.
// The caller must already have unpublished it. Never waits. `owner` tags
// the object for WaitForReclaim(). May allocate.
void Retire(const void* owner, void* object, void (*reclaim)(void*));

// Frees what can be freed now; never waits for readers.
void Reclaim();

// Waits until every object retired with `owner` has been reclaimed.
void WaitForReclaim(const void* owner);

}  // namespace client_internal
}  // namespace bucketmap

#endif  // BUCKETMAP_CLIENT_SRC_EPOCH_H_
