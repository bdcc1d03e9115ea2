// Weight gradient of a channel-last 3-D convolution on CPU, as an XLA FFI handler.
//
// dw[a, i, j, c, o] = sum_{n, t, y, x} in[n, t*st + a*dt - pf, y*sh + i*dh - pt,
//                                         x*sw + j*dw - pl, c] * gy[n, t, y, x, o]
// (zero outside the input), for in [N, D, H, W, C], gy [N, Do, Ho, Wo, O] and
// dw [KT, KH, KW, C, O]: the gradient of `lax.conv_general_dilated` (NDHWC / DHWIO / NDHWC) with
// respect to its kernel.
//
// The inner loop is the 2-D kernel's (`conv_weight_grad.cc`): for one kernel tap, an outer product
// of R input channels x V vectors of output channels accumulated in vector registers over the
// pixels of an output frame, reading input and cotangent in place. The order around it differs,
// because 3-D kernels are large (up to 27 x 512 x 512 floats, 28 MiB) while the deep layers'
// frames are small (4x4 pixels): one partial-sum buffer per thread, as the 2-D kernel keeps, would
// cost more to clear and add than the sums themselves. Here the work is cut into jobs, one per
// kernel tap and block of output channels; each thread owns a contiguous run of jobs (balanced
// by their valid pixel counts) and writes only their part of dw, so there is nothing to add up
// and the result does not depend on the thread count. Every thread walks the output frames
// (n, t) in groups whose input and cotangent fit in the core's L2 cache, and runs all its jobs on
// a group before the next: the stem's 800 KiB cotangent frame is read from memory once and from
// cache 343 times (7x7x7 taps), and a register block sums over a whole group of the deep layers'
// 16-pixel frames before it is stored.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kR4 = 4, kR2 = 8, kR1 = 16;  // R for V = 4, 2, 1: 16 accumulators
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kR4 = 3, kR2 = 6, kR1 = 12;  // 12 accumulators
#else
constexpr int kLanes = 4;
constexpr int kR4 = 3, kR2 = 6, kR1 = 12;
#endif
typedef float vec __attribute__((vector_size(4 * kLanes)));
typedef float vec_u __attribute__((vector_size(4 * kLanes), aligned(4)));  // unaligned access

// Bytes of input and cotangent frames per group of output frames: half of a 2 MiB L2.
constexpr int64_t kGroupBytes = 1 << 20;

struct Geom {
  int64_t n, d, h, w, c, od, oh, ow, o, kt, kh, kw, st, sh, sw, dt, dh, dw, pf, pt, pl;
};

int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output positions [lo, hi) whose tap `t` lands inside an input of `size` (stride s, dilation d,
// low padding p).
void ValidRange(int64_t size, int64_t out, int64_t t, int64_t s, int64_t d, int64_t p,
                int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(0, CeilDiv(p - t * d, s));
  *hi = std::min<int64_t>(out, FloorDiv(size - 1 + p - t * d, s) + 1);
}

inline vec LoadPartial(const float* p, int lanes) {
#if defined(__AVX512F__)
  return (vec)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << lanes) - 1), p);
#else
  vec v = {};
  std::memcpy(&v, p, lanes * sizeof(float));
  return v;
#endif
}

inline void StorePartial(float* p, vec v, int lanes) {
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << lanes) - 1), (__m512)v);
#else
  std::memcpy(p, &v, lanes * sizeof(float));
#endif
}

// An input frame and the output frame that reads it through one temporal tap (element offsets).
struct Pair {
  int64_t in, gy;
};

// One kernel tap (a, i, j) and block of output channels [o0, o0 + V * kLanes) (or `lanes` < kLanes
// when V == 1 and !kFull).
struct Job {
  int64_t a, i, j, o0;
  int v;      // 4, 2 or 1 vectors
  int lanes;  // kLanes, or fewer for the last partial vector
  int64_t y_lo, y_hi, x_lo, x_hi;
  double cost;
};

// Accumulates dw[tap, c0:c0+R, o0:o0+V*kLanes] over the pixels of `np` frame pairs.
template <int R, int V, bool kFull>
void TapBlock(const Geom& g, const float* in, const float* gy, float* dw, const Pair* pairs,
              int64_t np, const Job& job, int64_t c0) {
  vec acc[R][V];
  const int lanes = job.lanes;
  float* out = dw + (((job.a * g.kh + job.i) * g.kw + job.j) * g.c + c0) * g.o + job.o0;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = kFull ? *(const vec_u*)(out + r * g.o + kLanes * v)
                        : LoadPartial(out + r * g.o, lanes);
  for (int64_t p = 0; p < np; ++p) {
    const float* in_f = in + pairs[p].in + c0;
    const float* gy_f = gy + pairs[p].gy + job.o0;
    for (int64_t y = job.y_lo; y < job.y_hi; ++y) {
      const float* in_row = in_f + (y * g.sh + job.i * g.dh - g.pt) * g.w * g.c;
      const float* gy_row = gy_f + y * g.ow * g.o;
      for (int64_t x = job.x_lo; x < job.x_hi; ++x) {
        const float* ip = in_row + (x * g.sw + job.j * g.dw - g.pl) * g.c;
        const float* gp = gy_row + x * g.o;
        vec gv[V];
        for (int v = 0; v < V; ++v)
          gv[v] = kFull ? *(const vec_u*)(gp + kLanes * v) : LoadPartial(gp, lanes);
        for (int r = 0; r < R; ++r) {
          const float s = ip[r];
          for (int v = 0; v < V; ++v) acc[r][v] += s * gv[v];
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      if (kFull) *(vec_u*)(out + r * g.o + kLanes * v) = acc[r][v];
      else StorePartial(out + r * g.o, acc[r][v], lanes);
    }
}

// Input channels in blocks of R, then one block of the remaining c % R channels.
template <int R, int V, bool kFull>
void ChannelBlocks(const Geom& g, const float* in, const float* gy, float* dw, const Pair* pairs,
                   int64_t np, const Job& job) {
  int64_t c0 = 0;
  for (; c0 + R <= g.c; c0 += R) TapBlock<R, V, kFull>(g, in, gy, dw, pairs, np, job, c0);
#define JC_TAIL(K) \
  case K: TapBlock<K, V, kFull>(g, in, gy, dw, pairs, np, job, c0); break;
  switch (g.c - c0) {
    case 0: break;
    JC_TAIL(1) JC_TAIL(2) JC_TAIL(3) JC_TAIL(4) JC_TAIL(5) JC_TAIL(6) JC_TAIL(7)
    JC_TAIL(8) JC_TAIL(9) JC_TAIL(10) JC_TAIL(11) JC_TAIL(12) JC_TAIL(13) JC_TAIL(14)
    JC_TAIL(15)
    default: break;  // the rest is < R <= 16
  }
#undef JC_TAIL
}

void RunJob(const Geom& g, const float* in, const float* gy, float* dw, const Pair* pairs,
            int64_t np, const Job& job) {
  if (np == 0) return;
  if (job.v == 4) ChannelBlocks<kR4, 4, true>(g, in, gy, dw, pairs, np, job);
  else if (job.v == 2) ChannelBlocks<kR2, 2, true>(g, in, gy, dw, pairs, np, job);
  else if (job.lanes == kLanes) ChannelBlocks<kR1, 1, true>(g, in, gy, dw, pairs, np, job);
  else ChannelBlocks<kR1, 1, false>(g, in, gy, dw, pairs, np, job);
}

struct Work {
  Geom g;
  const float* in;
  const float* gy;
  float* dw;
  std::vector<Job> jobs;
  int64_t group;  // output frames per group
  std::vector<int64_t> bounds;  // jobs [bounds[p], bounds[p + 1]) belong to part p
  std::unique_ptr<std::atomic<int>[]> state;  // per part: 0 free, 1 taken, 2 finished
};

// Part p's jobs on every group of output frames, one group after the other.
void RunPart(const Work& w, int64_t p) {
  const Geom& g = w.g;
  const int64_t frames = g.n * g.od;
  const int64_t in_frame = g.h * g.w * g.c, gy_frame = g.oh * g.ow * g.o;
  std::vector<Pair> pairs(w.group);
  for (int64_t f0 = 0; f0 < frames; f0 += w.group) {
    const int64_t f1 = std::min(frames, f0 + w.group);
    int64_t last_a = -1, np = 0;
    for (int64_t k = w.bounds[p]; k < w.bounds[p + 1]; ++k) {
      const Job& job = w.jobs[k];
      if (job.a != last_a) {  // jobs come tap by tap: the pairs change with the temporal tap
        last_a = job.a;
        np = 0;
        for (int64_t f = f0; f < f1; ++f) {
          const int64_t n = f / g.od, t = f % g.od;
          const int64_t it = t * g.st + job.a * g.dt - g.pf;
          if (it < 0 || it >= g.d) continue;
          pairs[np++] = Pair{(n * g.d + it) * in_frame, f * gy_frame};
        }
      }
      RunJob(g, w.in, w.gy, w.dw, pairs.data(), np, job);
    }
  }
}

bool TryRun(Work* w, int64_t p) {
  int expected = 0;
  if (!w->state[p].compare_exchange_strong(expected, 1)) return false;
  RunPart(*w, p);
  w->state[p].store(2, std::memory_order_release);
  return true;
}

ffi::Error Conv3dWeightGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in,
                                ffi::Buffer<ffi::F32> gy, ffi::ResultBuffer<ffi::F32> dw,
                                int64_t stride_t, int64_t stride_h, int64_t stride_w,
                                int64_t dilation_t, int64_t dilation_h, int64_t dilation_w,
                                int64_t pad_front, int64_t pad_top, int64_t pad_left) {
  auto id = in.dimensions();
  auto gd = gy.dimensions();
  auto wd = dw->dimensions();
  if (id.size() != 5 || gd.size() != 5 || wd.size() != 5)
    return ffi::Error::InvalidArgument("conv3d_weight_grad: rank-5 NDHWC/DHWIO operands expected");
  if (id[0] != gd[0] || wd[3] != id[4] || wd[4] != gd[4])
    return ffi::Error::InvalidArgument("conv3d_weight_grad: batch or channel counts differ");
  if (stride_t < 1 || stride_h < 1 || stride_w < 1 || dilation_t < 1 || dilation_h < 1 ||
      dilation_w < 1 || pad_front < 0 || pad_top < 0 || pad_left < 0)
    return ffi::Error::InvalidArgument("conv3d_weight_grad: strides/dilations >= 1, pads >= 0");
  auto work = std::make_shared<Work>();
  Geom& g = work->g;
  g = Geom{id[0], id[1], id[2], id[3], id[4], gd[1], gd[2], gd[3], gd[4], wd[0], wd[1], wd[2],
           stride_t, stride_h, stride_w, dilation_t, dilation_h, dilation_w,
           pad_front, pad_top, pad_left};
  work->in = in.typed_data();
  work->gy = gy.typed_data();
  work->dw = dw->typed_data();
  std::memset(work->dw, 0, g.kt * g.kh * g.kw * g.c * g.o * sizeof(float));

  // Blocks of output channels: 4, 2, 1 vectors, then a partial one (as the 2-D kernel).
  struct Block { int64_t o0; int v, lanes; };
  std::vector<Block> blocks;
  int64_t o0 = 0;
  for (; o0 + 4 * kLanes <= g.o; o0 += 4 * kLanes) blocks.push_back({o0, 4, kLanes});
  for (; o0 + 2 * kLanes <= g.o; o0 += 2 * kLanes) blocks.push_back({o0, 2, kLanes});
  for (; o0 + kLanes <= g.o; o0 += kLanes) blocks.push_back({o0, 1, kLanes});
  if (o0 < g.o) blocks.push_back({o0, 1, static_cast<int>(g.o - o0)});
  double total = 0;
  for (int64_t a = 0; a < g.kt; ++a) {
    int64_t t_lo, t_hi;
    ValidRange(g.d, g.od, a, g.st, g.dt, g.pf, &t_lo, &t_hi);
    if (t_lo >= t_hi) continue;  // a tap that only meets padding: its gradient stays 0
    for (int64_t i = 0; i < g.kh; ++i) {
      int64_t y_lo, y_hi;
      ValidRange(g.h, g.oh, i, g.sh, g.dh, g.pt, &y_lo, &y_hi);
      if (y_lo >= y_hi) continue;
      for (int64_t j = 0; j < g.kw; ++j) {
        int64_t x_lo, x_hi;
        ValidRange(g.w, g.ow, j, g.sw, g.dw, g.pl, &x_lo, &x_hi);
        if (x_lo >= x_hi) continue;
        for (const Block& b : blocks) {
          const double cost = double(t_hi - t_lo) * (y_hi - y_lo) * (x_hi - x_lo) * g.c *
                              (b.v * kLanes);
          work->jobs.push_back(Job{a, i, j, b.o0, b.v, b.lanes, y_lo, y_hi, x_lo, x_hi, cost});
          total += cost;
        }
      }
    }
  }
  const int64_t jobs = static_cast<int64_t>(work->jobs.size());
  if (jobs == 0) return ffi::Error::Success();
  const int64_t frame_bytes = 4 * (g.oh * g.ow * g.o + g.st * g.h * g.w * g.c);
  work->group = std::max<int64_t>(1, std::min<int64_t>(g.n * g.od, kGroupBytes / frame_bytes));

  // Contiguous runs of jobs of about equal cost, one per thread of XLA's pool (at most one per
  // job). Run p > 0 is offered to the pool; one whose task has not started when the caller gets to
  // it is run by the caller, so a call never waits behind other queued work (as the 2-D kernel).
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), jobs));
  work->bounds.assign(parts + 1, jobs);
  work->bounds[0] = 0;
  double run = 0;
  int64_t p = 1;
  for (int64_t k = 0; k < jobs && p < parts; ++k) {
    run += work->jobs[k].cost;
    while (p < parts && run >= total * p / parts) work->bounds[p++] = k + 1;
  }
  work->state.reset(new std::atomic<int>[parts]);
  for (int64_t q = 0; q < parts; ++q) work->state[q].store(0);
  for (int64_t q = 1; q < parts; ++q) pool.Schedule([w = work, q]() { TryRun(w.get(), q); });
  TryRun(work.get(), 0);
  for (int64_t q = 1; q < parts; ++q) {
    if (TryRun(work.get(), q)) continue;
    while (work->state[q].load(std::memory_order_acquire) != 2) std::this_thread::yield();
  }
  return ffi::Error::Success();
}

}  // namespace

extern "C" int JaxcompressConv3dWeightGradLanes() { return kLanes; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompressConv3dWeightGrad, Conv3dWeightGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_t")
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("dilation_t")
                                  .Attr<int64_t>("dilation_h")
                                  .Attr<int64_t>("dilation_w")
                                  .Attr<int64_t>("pad_front")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
