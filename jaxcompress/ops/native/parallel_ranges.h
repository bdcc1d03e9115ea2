// Sharing a kernel's rows out to XLA's intra-op thread pool (used by binary_conv.cc and
// int8_conv.cc; each of their ranges writes its own output rows).
#ifndef JAXCOMPRESS_OPS_NATIVE_PARALLEL_RANGES_H_
#define JAXCOMPRESS_OPS_NATIVE_PARALLEL_RANGES_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace jaxcompress {

// Runs fn(begin, end) over [0, rows) cut into `parts` contiguous ranges. Range 0 runs on the
// caller; the others are offered to the pool, and one whose task has not started when the caller
// gets to it is run by the caller (the task, when it runs later, finds it taken), so a call never
// waits for a task queued behind other work. The shared state outlives a late task; `fn` is
// only ever called before RunRanges returns.
inline void RunRanges(xla::ffi::ThreadPool& pool, int64_t rows, int64_t parts,
                      const std::function<void(int64_t, int64_t)>& fn) {
  if (parts <= 1) {
    fn(0, rows);
    return;
  }
  struct Range {
    std::atomic<int> state{0};  // 0 free, 1 taken, 2 finished
    int64_t begin = 0, end = 0;
  };
  struct Shared {
    std::unique_ptr<Range[]> ranges;
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
  };
  auto shared = std::make_shared<Shared>();
  shared->ranges.reset(new Range[parts]);
  shared->fn = &fn;
  for (int64_t r = 0; r < parts; ++r) {
    shared->ranges[r].begin = rows * r / parts;
    shared->ranges[r].end = rows * (r + 1) / parts;
  }
  auto try_run = [](Shared* s, int64_t r) {
    Range& range = s->ranges[r];
    int expected = 0;
    if (!range.state.compare_exchange_strong(expected, 1)) return false;
    (*s->fn)(range.begin, range.end);
    range.state.store(2, std::memory_order_release);
    return true;
  };
  for (int64_t r = 1; r < parts; ++r)
    pool.Schedule([s = shared, r, try_run]() { try_run(s.get(), r); });
  try_run(shared.get(), 0);
  for (int64_t r = 1; r < parts; ++r) {
    if (try_run(shared.get(), r)) continue;
    while (shared->ranges[r].state.load(std::memory_order_acquire) != 2) std::this_thread::yield();
  }
}

}  // namespace jaxcompress

#endif  // JAXCOMPRESS_OPS_NATIVE_PARALLEL_RANGES_H_
