// Weight gradient of a channel-last 2-D convolution on CPU, as an XLA FFI handler.
//
// dw[i, j, c, o] = sum_{n, y, x} in[n, y*sh + i*dh - pt, x*sw + j*dw - pl, c] * gy[n, y, x, o]
// (zero outside the input), for in [N, H, W, C], gy [N, Ho, Wo, O] and dw [KH, KW, C, O]: the
// gradient of `lax.conv_general_dilated` (NHWC / HWIO / NHWC) with respect to its kernel.
//
// XLA:CPU computes this as a convolution over batch-minor transposes of both operands (2-4x
// slower than oneDNN's backward-weights kernel at ResNet-20 shapes). Here the input and the
// cotangent are read in place, one image at a time (a few hundred KiB, cache resident), and each
// kernel tap accumulates an outer product of R input channels x V vectors of output channels in
// vector registers over the image's pixels: one fused multiply-add per output element per pixel, no
// patch matrix, no transpose. Ranges of output rows (across images) are shared out to XLA's
// intra-op thread pool; each worker sums into its own buffer and the caller adds them. jaxcompress compiles this file on first use
// with the system C++ compiler for the host CPU (-march=native), see `native_build.py`.
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

#include "conv_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The host's vector width (the file is compiled with -march=native): kLanes floats per register,
// and register blocks of R input x V vectors of output channels that fit the register file
// (32 registers with AVX-512, 16 with AVX/SSE) with room for the cotangent row and a broadcast.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kR4 = 4, kR2 = 8, kR1 = 16;  // R for V = 4, 2, 1: 16 accumulators
// Layers with at least 6 input channels take blocks of 6 x 4 vectors (24 accumulators: fewer
// loads per FMA, faster on wide GAN layers); with fewer channels the 4-channel blocks measured
// faster (a 3-channel 7x7 stem; numbers in BENCHMARKS.md).
constexpr int kR4Wide = 6;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kR4 = 3, kR2 = 6, kR1 = 12;  // 12 accumulators
constexpr int kR4Wide = kR4;
#else
constexpr int kLanes = 4;
constexpr int kR4 = 3, kR2 = 6, kR1 = 12;
constexpr int kR4Wide = kR4;
#endif
typedef float vec __attribute__((vector_size(4 * kLanes)));
typedef float vec_u __attribute__((vector_size(4 * kLanes), aligned(4)));  // unaligned access

struct Geom {
  int64_t n, h, w, c, ho, wo, o, kh, kw, sh, sw, dh, dw, pt, pl;
};

int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output rows [lo, hi) whose tap `t` lands inside an input of `size` (stride s, dilation d,
// low padding p).
void ValidRange(int64_t size, int64_t out, int64_t t, int64_t s, int64_t d, int64_t p,
                int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(0, CeilDiv(p - t * d, s));
  *hi = std::min<int64_t>(out, FloorDiv(size - 1 + p - t * d, s) + 1);
}

// Loads `lanes` (< kLanes) floats, zero-filling the rest: the tail of the output channels.
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

// Accumulates one tap (i, j) of one image into dw[i, j, c0:c0+R, o0:o0+V*kLanes]; `lanes` < kLanes
// marks a last, partial vector of output channels (then V == 1 and kFull is false).
template <int R, int V, bool kFull>
void TapBlock(const Geom& g, const float* in, const float* gy, float* dw, int64_t n, int64_t i,
              int64_t j, int64_t c0, int64_t o0, int lanes, int64_t y_lo, int64_t y_hi,
              int64_t x_lo, int64_t x_hi) {
  vec acc[R][V];
  float* out = dw + ((i * g.kw + j) * g.c + c0) * g.o + o0;
  constexpr bool full = kFull;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = full ? *(const vec_u*)(out + r * g.o + kLanes * v) : LoadPartial(out + r * g.o, lanes);
  for (int64_t y = y_lo; y < y_hi; ++y) {
    const int64_t iy = y * g.sh + i * g.dh - g.pt;
    const float* in_row = in + ((n * g.h + iy) * g.w) * g.c + c0;
    const float* gy_row = gy + ((n * g.ho + y) * g.wo) * g.o + o0;
    for (int64_t x = x_lo; x < x_hi; ++x) {
      const float* ip = in_row + (x * g.sw + j * g.dw - g.pl) * g.c;
      const float* gp = gy_row + x * g.o;
      vec gv[V];
      for (int v = 0; v < V; ++v) gv[v] = full ? *(const vec_u*)(gp + kLanes * v) : LoadPartial(gp, lanes);
      for (int r = 0; r < R; ++r) {
        const float s = ip[r];
        for (int v = 0; v < V; ++v) acc[r][v] += s * gv[v];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      if (full) *(vec_u*)(out + r * g.o + kLanes * v) = acc[r][v];
      else StorePartial(out + r * g.o, acc[r][v], lanes);
    }
}

// Input channels [c0, c) in blocks of R, then one block of the remaining c - c0 < R channels.
template <int R, int V, bool kFull>
void ChannelBlocks(const Geom& g, const float* in, const float* gy, float* dw, int64_t n,
                   int64_t i, int64_t j, int64_t o0, int lanes, int64_t y_lo, int64_t y_hi,
                   int64_t x_lo, int64_t x_hi) {
  int64_t c0 = 0;
  for (; c0 + R <= g.c; c0 += R)
    TapBlock<R, V, kFull>(g, in, gy, dw, n, i, j, c0, o0, lanes, y_lo, y_hi, x_lo, x_hi);
  const int64_t rest = g.c - c0;
#define JC_TAIL(K) \
  case K: TapBlock<K, V, kFull>(g, in, gy, dw, n, i, j, c0, o0, lanes, y_lo, y_hi, x_lo, x_hi); break;
  switch (rest) {
    case 0: break;
    JC_TAIL(1) JC_TAIL(2) JC_TAIL(3) JC_TAIL(4) JC_TAIL(5) JC_TAIL(6) JC_TAIL(7)
    JC_TAIL(8) JC_TAIL(9) JC_TAIL(10) JC_TAIL(11) JC_TAIL(12) JC_TAIL(13) JC_TAIL(14)
    JC_TAIL(15)
    default: break;  // rest < R <= 16
  }
#undef JC_TAIL
}

// All taps of output rows [row_lo, row_hi) x columns [col_lo, col_hi) of image n. Output
// channels go in blocks of 4, 2 or 1 vectors, then a partial one.
void Chunk(const Geom& g, const float* in, const float* gy, float* dw, int64_t n, int64_t row_lo,
           int64_t row_hi, int64_t col_lo, int64_t col_hi) {
  for (int64_t i = 0; i < g.kh; ++i) {
    int64_t y_lo, y_hi;
    ValidRange(g.h, g.ho, i, g.sh, g.dh, g.pt, &y_lo, &y_hi);
    y_lo = std::max(y_lo, row_lo);
    y_hi = std::min(y_hi, row_hi);
    if (y_lo >= y_hi) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      int64_t x_lo, x_hi;
      ValidRange(g.w, g.wo, j, g.sw, g.dw, g.pl, &x_lo, &x_hi);
      x_lo = std::max(x_lo, col_lo);
      x_hi = std::min(x_hi, col_hi);
      if (x_lo >= x_hi) continue;
      int64_t o0 = 0;
      for (; o0 + 4 * kLanes <= g.o; o0 += 4 * kLanes) {
        if (kR4Wide > kR4 && g.c >= kR4Wide)
          ChannelBlocks<kR4Wide, 4, true>(g, in, gy, dw, n, i, j, o0, kLanes, y_lo, y_hi, x_lo,
                                          x_hi);
        else
          ChannelBlocks<kR4, 4, true>(g, in, gy, dw, n, i, j, o0, kLanes, y_lo, y_hi, x_lo, x_hi);
      }
      for (; o0 + 2 * kLanes <= g.o; o0 += 2 * kLanes)
        ChannelBlocks<kR2, 2, true>(g, in, gy, dw, n, i, j, o0, kLanes, y_lo, y_hi, x_lo, x_hi);
      for (; o0 + kLanes <= g.o; o0 += kLanes)
        ChannelBlocks<kR1, 1, true>(g, in, gy, dw, n, i, j, o0, kLanes, y_lo, y_hi, x_lo, x_hi);
      if (o0 < g.o)
        ChannelBlocks<kR1, 1, false>(g, in, gy, dw, n, i, j, o0, static_cast<int>(g.o - o0), y_lo, y_hi,
                             x_lo, x_hi);
    }
  }
}

// Output rows [row_lo, row_hi) of image n in chunks of about kChunkPixels output pixels (whole
// rows, or pieces of one wide row in order): a chunk's cotangent rows stay in L1 while every tap
// and input-channel block reads them, where one pass over a whole image per block streamed them
// from L2 (3-5x slower on GAN layers, BENCHMARKS.md). The pixels are still summed in the same
// order, so the result is bit-identical to unchunked sums.
constexpr int64_t kChunkPixels = 64;

void Image(const Geom& g, const float* in, const float* gy, float* dw, int64_t n, int64_t row_lo,
           int64_t row_hi) {
  const int64_t cols = std::min<int64_t>(g.wo, kChunkPixels);
  const int64_t rows = std::max<int64_t>(1, kChunkPixels / std::max<int64_t>(g.wo, 1));
  for (int64_t r0 = row_lo; r0 < row_hi; r0 += rows)
    for (int64_t c0 = 0; c0 < g.wo; c0 += cols)
      Chunk(g, in, gy, dw, n, r0, std::min(row_hi, r0 + rows), c0, std::min(g.wo, c0 + cols));
}

// The output rows of the whole batch (image n's row y is row n * Ho + y) are cut into one
// contiguous range per thread of XLA's pool, so a batch of one image (GAN training) is shared out
// as well as a batch of many; range p > 0
// sums into its own buffer, and the caller adds the buffers in order, so the result does not
// depend on which thread ran what (bit-identical from run to run). Ranges p > 0 are offered to
// the pool; one whose task has not started when the caller gets to it is run by the caller
// (the task, when it runs later, finds it taken), so a call never waits for a task that is
// queued behind other work. Owned jointly (shared_ptr): a late task can run after the call.
struct Range {
  std::atomic<int> state{0};  // 0 free, 1 taken, 2 finished
  int64_t begin = 0, end = 0;
  std::vector<float> dw;
};

struct Work {
  Geom g;
  const float* in;
  const float* gy;
  std::unique_ptr<Range[]> ranges;
};

// Rows [begin, end) of the batch's n * Ho output rows.
void RunRange(const Work& w, int64_t begin, int64_t end, float* dw) {
  const int64_t ho = w.g.ho;
  for (int64_t n = begin / ho; n * ho < end; ++n)
    Image(w.g, w.in, w.gy, dw, n, std::max<int64_t>(begin - n * ho, 0),
          std::min<int64_t>(end - n * ho, ho));
}

// Takes range r if it is free and runs it; returns false if another thread has it.
bool TryRun(Work* w, int64_t r) {
  Range& range = w->ranges[r];
  int expected = 0;
  if (!range.state.compare_exchange_strong(expected, 1)) return false;
  RunRange(*w, range.begin, range.end, range.dw.data());
  range.state.store(2, std::memory_order_release);
  return true;
}

ffi::Error ConvWeightGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in,
                              ffi::Buffer<ffi::F32> gy, ffi::ResultBuffer<ffi::F32> dw,
                              int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                              int64_t dilation_w, int64_t pad_top, int64_t pad_left) {
  auto id = in.dimensions();
  auto gd = gy.dimensions();
  auto wd = dw->dimensions();
  if (id.size() != 4 || gd.size() != 4 || wd.size() != 4)
    return ffi::Error::InvalidArgument("conv_weight_grad: rank-4 NHWC/HWIO operands expected");
  if (id[0] != gd[0] || wd[2] != id[3] || wd[3] != gd[3])
    return ffi::Error::InvalidArgument("conv_weight_grad: batch or channel counts differ");
  if (stride_h < 1 || stride_w < 1 || dilation_h < 1 || dilation_w < 1 || pad_top < 0 ||
      pad_left < 0)
    return ffi::Error::InvalidArgument("conv_weight_grad: strides/dilations >= 1, pads >= 0");
  Geom g{id[0], id[1], id[2], id[3], gd[1], gd[2], gd[3], wd[0], wd[1],
         stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left};
  const int64_t size = g.kh * g.kw * g.c * g.o;
  float* out = dw->typed_data();
  std::memset(out, 0, size * sizeof(float));
  const int64_t rows = g.n * g.ho;
  // A range of fewer than kMinRows rows is not worth a thread's extra buffer and final sum.
  constexpr int64_t kMinRows = 8;
  const int64_t parts =
      std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), rows / kMinRows));
  if (rows == 0) return ffi::Error::Success();
  if (parts == 1) {
    Work w{g, in.typed_data(), gy.typed_data(), nullptr};
    RunRange(w, 0, rows, out);
    return ffi::Error::Success();
  }
  auto work = std::make_shared<Work>();
  work->g = g;
  work->in = in.typed_data();
  work->gy = gy.typed_data();
  work->ranges.reset(new Range[parts]);
  for (int64_t r = 0; r < parts; ++r) {
    work->ranges[r].begin = rows * r / parts;
    work->ranges[r].end = rows * (r + 1) / parts;
    if (r > 0) work->ranges[r].dw.assign(size, 0.f);
  }
  for (int64_t r = 1; r < parts; ++r) pool.Schedule([w = work, r]() { TryRun(w.get(), r); });
  RunRange(*work, work->ranges[0].begin, work->ranges[0].end, out);
  for (int64_t r = 1; r < parts; ++r) {
    if (TryRun(work.get(), r)) continue;
    while (work->ranges[r].state.load(std::memory_order_acquire) != 2) std::this_thread::yield();
  }
  for (int64_t r = 1; r < parts; ++r) {
    const float* part = work->ranges[r].dw.data();
    for (int64_t k = 0; k < size; ++k) out[k] += part[k];
  }
  return ffi::Error::Success();
}

}  // namespace

// Floats per vector register in this build: the Python side uses the kernel only with 8 or more
// (AVX and up); with 128-bit vectors XLA's own convolution is as fast (measured: 10 ms vs 9).
extern "C" int JaxcompressConvWeightGradLanes() { return kLanes; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompressConvWeightGrad, ConvWeightGradImpl,
                              jaxcompress::ConvGeometryBinding());
