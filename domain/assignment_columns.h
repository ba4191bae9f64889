// AssignmentColumns: the packed assignment columns of a Snapshot, held in
// immutable chunks shared between versions.
//
// Rows are (team_id, target) pairs ascending by team id, stored as two
// parallel columns split into chunks of about kChunkSize rows. Each chunk
// is held by a shared_ptr and never modified once built, so Apply() copies
// only the chunk index and rebuilds the chunks the change touches: a write's
// cost depends on the size of the change, not on the mapping's. Reads stay
// close to a flat array: lookups are two binary searches, and ForEachRun
// hands out each chunk's contiguous span for encoding.
//
// Immutable once built; any number of threads may read it.
#ifndef BUCKETMAP_DOMAIN_ASSIGNMENT_COLUMNS_H_
#define BUCKETMAP_DOMAIN_ASSIGNMENT_COLUMNS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace bucketmap {

class AssignmentColumns {
 public:
  // Rows per chunk when built from scratch; a rebuilt chunk is split above
  // twice this and merged into its predecessor below a quarter of it.
  static constexpr size_t kChunkSize = 2048;

  struct Chunk {
    std::vector<int64_t> team_ids;  // ascending, never empty
    std::vector<int32_t> targets;   // same length
  };

  // A read-only view of one column, iterable like a container (forward
  // iterators), for range-for, protobuf's Add(begin, end) and tests.
  template <typename T, std::vector<T> Chunk::*kField>
  class Column {
   public:
    using value_type = T;
    using size_type = size_t;
    using difference_type = ptrdiff_t;
    using reference = const T&;
    using const_reference = const T&;

    class const_iterator {
     public:
      using iterator_category = std::forward_iterator_tag;
      using value_type = T;
      using difference_type = ptrdiff_t;
      using pointer = const T*;
      using reference = const T&;

      const_iterator() = default;
      const T& operator*() const { return (cols_->refs_[chunk_].chunk.get()->*kField)[offset_]; }
      const T* operator->() const { return &**this; }
      const_iterator& operator++() {
        if (++offset_ == (cols_->refs_[chunk_].chunk.get()->*kField).size()) {
          ++chunk_;
          offset_ = 0;
        }
        return *this;
      }
      const_iterator operator++(int) {
        const_iterator old = *this;
        ++*this;
        return old;
      }
      friend bool operator==(const const_iterator& a, const const_iterator& b) {
        return a.chunk_ == b.chunk_ && a.offset_ == b.offset_;
      }
      friend bool operator!=(const const_iterator& a, const const_iterator& b) { return !(a == b); }

     private:
      friend class Column;
      const_iterator(const AssignmentColumns* cols, size_t chunk) : cols_(cols), chunk_(chunk) {}
      const AssignmentColumns* cols_ = nullptr;
      size_t chunk_ = 0;
      size_t offset_ = 0;
    };
    using iterator = const_iterator;

    explicit Column(const AssignmentColumns* cols) : cols_(cols) {}
    size_t size() const { return cols_->size(); }
    bool empty() const { return cols_->empty(); }
    const_iterator begin() const { return const_iterator(cols_, 0); }
    const_iterator end() const { return const_iterator(cols_, cols_->refs_.size()); }
    // O(log chunks).
    T operator[](size_t i) const {
      const auto [chunk, offset] = cols_->Locate(i);
      return (cols_->refs_[chunk].chunk.get()->*kField)[offset];
    }
    // Calls f(absl::Span<const T>) for each chunk's rows, in order.
    template <typename F>
    void ForEachRun(F&& f) const {
      for (const Ref& ref : cols_->refs_) f(absl::MakeConstSpan(ref.chunk.get()->*kField));
    }
    friend bool operator==(const Column& a, const Column& b) {
      return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
    }
    friend bool operator!=(const Column& a, const Column& b) { return !(a == b); }

   private:
    const AssignmentColumns* cols_;
  };
  using TeamIds = Column<int64_t, &Chunk::team_ids>;
  using Targets = Column<int32_t, &Chunk::targets>;

  AssignmentColumns() = default;
  // `team_ids` ascending and unique; `targets` of the same length.
  AssignmentColumns(absl::Span<const int64_t> team_ids, absl::Span<const int32_t> targets);

  size_t size() const { return refs_.empty() ? 0 : refs_.back().end; }
  bool empty() const { return refs_.empty(); }
  TeamIds team_ids() const { return TeamIds(this); }
  Targets targets() const { return Targets(this); }
  size_t chunk_count() const { return refs_.size(); }

  // Returns the target of `team_id`, or nullptr when it has no row.
  const int32_t* Find(int64_t team_id) const;

  // Calls f(team_id, target) for every row, in order.
  template <typename F>
  void ForEach(F&& f) const {
    for (const Ref& ref : refs_) {
      const Chunk& chunk = *ref.chunk;
      for (size_t i = 0; i < chunk.team_ids.size(); ++i) f(chunk.team_ids[i], chunk.targets[i]);
    }
  }

  // Calls f(team_id, target) for the rows with team_id > `after`, in order,
  // until f returns false.
  template <typename F>
  void ScanAfter(int64_t after, F&& f) const {
    size_t c = ChunkOf(after);
    if (c == kNone) c = 0;
    for (; c < refs_.size(); ++c) {
      const Chunk& chunk = *refs_[c].chunk;
      size_t i = std::upper_bound(chunk.team_ids.begin(), chunk.team_ids.end(), after) -
                 chunk.team_ids.begin();
      for (; i < chunk.team_ids.size(); ++i) {
        if (!f(chunk.team_ids[i], chunk.targets[i])) return;
      }
    }
  }

  // Returns the columns with `set` (ascending, unique team ids; rows added
  // or replaced) and `unset` (ascending; rows removed when present) applied.
  // Chunks holding none of those team ids are shared with this object.
  AssignmentColumns Apply(absl::Span<const std::pair<int64_t, int32_t>> set,
                          absl::Span<const int64_t> unset) const;

  // Returns the columns with every target t replaced by remap(t): copies
  // every chunk.
  template <typename F>
  AssignmentColumns MapTargets(F&& remap) const {
    AssignmentColumns out;
    out.refs_.reserve(refs_.size());
    for (const Ref& ref : refs_) {
      auto chunk = std::make_shared<Chunk>(*ref.chunk);
      for (int32_t& t : chunk->targets) t = remap(t);
      out.refs_.push_back(Ref{std::move(chunk), ref.first, ref.end});
    }
    return out;
  }

 private:
  static constexpr size_t kNone = static_cast<size_t>(-1);
  struct Ref {
    std::shared_ptr<const Chunk> chunk;
    int64_t first;  // chunk->team_ids.front()
    size_t end;     // rows in this chunk and every earlier one
  };

  // The chunk whose range holds `team_id` (the last one starting at or
  // below it), or kNone when it lies before the first.
  size_t ChunkOf(int64_t team_id) const;
  // (chunk, offset) of row `i` < size().
  std::pair<size_t, size_t> Locate(size_t i) const;
  // Appends `chunk` (may be empty or oversized) to refs_, splitting,
  // dropping, or merging a small one into the previous chunk.
  void Push(Chunk chunk);
  void PushShared(const std::shared_ptr<const Chunk>& chunk);

  std::vector<Ref> refs_;
};

}  // namespace bucketmap

#endif  // BUCKETMAP_DOMAIN_ASSIGNMENT_COLUMNS_H_
