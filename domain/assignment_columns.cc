#include "domain/assignment_columns.h"

#include <algorithm>
#include <utility>

namespace bucketmap {

AssignmentColumns::AssignmentColumns(absl::Span<const int64_t> team_ids,
                                     absl::Span<const int32_t> targets) {
  const size_t n = team_ids.size();
  refs_.reserve((n + kChunkSize - 1) / kChunkSize);
  for (size_t begin = 0; begin < n; begin += kChunkSize) {
    const size_t end = std::min(n, begin + kChunkSize);
    Chunk chunk;
    chunk.team_ids.assign(team_ids.begin() + begin, team_ids.begin() + end);
    chunk.targets.assign(targets.begin() + begin, targets.begin() + end);
    Push(std::move(chunk));
  }
}

size_t AssignmentColumns::ChunkOf(int64_t team_id) const {
  auto it = std::upper_bound(refs_.begin(), refs_.end(), team_id,
                             [](int64_t t, const Ref& r) { return t < r.first; });
  return it == refs_.begin() ? kNone : static_cast<size_t>(it - refs_.begin()) - 1;
}

std::pair<size_t, size_t> AssignmentColumns::Locate(size_t i) const {
  auto it = std::upper_bound(refs_.begin(), refs_.end(), i,
                             [](size_t v, const Ref& r) { return v < r.end; });
  const size_t chunk = it - refs_.begin();
  const size_t start = chunk == 0 ? 0 : refs_[chunk - 1].end;
  return {chunk, i - start};
}

const int32_t* AssignmentColumns::Find(int64_t team_id) const {
  const size_t c = ChunkOf(team_id);
  if (c == kNone) return nullptr;
  const Chunk& chunk = *refs_[c].chunk;
  auto it = std::lower_bound(chunk.team_ids.begin(), chunk.team_ids.end(), team_id);
  if (it == chunk.team_ids.end() || *it != team_id) return nullptr;
  return &chunk.targets[it - chunk.team_ids.begin()];
}

void AssignmentColumns::PushShared(const std::shared_ptr<const Chunk>& chunk) {
  const size_t before = refs_.empty() ? 0 : refs_.back().end;
  refs_.push_back(Ref{chunk, chunk->team_ids.front(), before + chunk->team_ids.size()});
}

void AssignmentColumns::Push(Chunk chunk) {
  if (chunk.team_ids.empty()) return;
  // A small rebuilt chunk joins its predecessor, so that removals do not
  // leave the index full of slivers.
  if (!refs_.empty() && chunk.team_ids.size() < kChunkSize / 4 &&
      refs_.back().chunk->team_ids.size() + chunk.team_ids.size() <= 2 * kChunkSize) {
    const Chunk& prev = *refs_.back().chunk;
    Chunk merged;
    merged.team_ids.reserve(prev.team_ids.size() + chunk.team_ids.size());
    merged.targets.reserve(merged.team_ids.capacity());
    merged.team_ids = prev.team_ids;
    merged.targets = prev.targets;
    merged.team_ids.insert(merged.team_ids.end(), chunk.team_ids.begin(), chunk.team_ids.end());
    merged.targets.insert(merged.targets.end(), chunk.targets.begin(), chunk.targets.end());
    refs_.pop_back();
    chunk = std::move(merged);
  }
  const size_t n = chunk.team_ids.size();
  if (n <= 2 * kChunkSize) {
    PushShared(std::make_shared<const Chunk>(std::move(chunk)));
    return;
  }
  const size_t pieces = (n + kChunkSize - 1) / kChunkSize;
  for (size_t p = 0; p < pieces; ++p) {
    const size_t begin = n * p / pieces, end = n * (p + 1) / pieces;
    Chunk piece;
    piece.team_ids.assign(chunk.team_ids.begin() + begin, chunk.team_ids.begin() + end);
    piece.targets.assign(chunk.targets.begin() + begin, chunk.targets.begin() + end);
    PushShared(std::make_shared<const Chunk>(std::move(piece)));
  }
}

AssignmentColumns AssignmentColumns::Apply(absl::Span<const std::pair<int64_t, int32_t>> set,
                                           absl::Span<const int64_t> unset) const {
  AssignmentColumns out;
  if (refs_.empty()) {
    Chunk chunk;
    for (const auto& [team, target] : set) {
      chunk.team_ids.push_back(team);
      chunk.targets.push_back(target);
    }
    out.Push(std::move(chunk));
    return out;
  }
  out.refs_.reserve(refs_.size() + 1);
  size_t j = 0, k = 0;  // next set / unset entry
  for (size_t c = 0; c < refs_.size(); ++c) {
    // Chunk c takes the changes below the next chunk's first team (the
    // first chunk also those before it, the last everything after it).
    const bool last = c + 1 == refs_.size();
    const int64_t limit = last ? 0 : refs_[c + 1].first;
    size_t je = j, ke = k;
    while (je < set.size() && (last || set[je].first < limit)) ++je;
    while (ke < unset.size() && (last || unset[ke] < limit)) ++ke;
    if (je == j && ke == k) {
      out.PushShared(refs_[c].chunk);
      continue;
    }
    // Linear merge of the chunk's rows with its set and unset entries.
    const Chunk& old = *refs_[c].chunk;
    Chunk chunk;
    chunk.team_ids.reserve(old.team_ids.size() + (je - j));
    chunk.targets.reserve(old.team_ids.size() + (je - j));
    size_t i = 0;
    const size_t n = old.team_ids.size();
    while (i < n || j < je) {
      if (j < je && (i >= n || set[j].first <= old.team_ids[i])) {
        if (i < n && old.team_ids[i] == set[j].first) ++i;
        chunk.team_ids.push_back(set[j].first);
        chunk.targets.push_back(set[j].second);
        ++j;
        continue;
      }
      const int64_t team = old.team_ids[i];
      while (k < ke && unset[k] < team) ++k;
      if (k < ke && unset[k] == team) {
        ++i;
        continue;
      }
      chunk.team_ids.push_back(team);
      chunk.targets.push_back(old.targets[i]);
      ++i;
    }
    j = je;
    k = ke;
    out.Push(std::move(chunk));
  }
  return out;
}

}  // namespace bucketmap
