// Depthwise (one channel per group) channel-last 2-D convolution on CPU, as XLA FFI handlers.
//
//   out[n, y, x, c] = sum_{i, j} in[n, y*sh + i*dh - pt, x*sw + j*dw - pl, c] * w[i, j, c]
//   dw[i, j, c]     = sum_{n, y, x} in[n, y*sh + i*dh - pt, x*sw + j*dw - pl, c] * gy[n, y, x, c]
//
// (zero outside the input) for in [N, H, W, C], w [KH, KW, C], out / gy [N, Ho, Wo, C]. The input
// gradient is the forward one over the stride-dilated, padded cotangent with the flipped kernel
// (built by `ops/depthwise_conv.py`).
//
// XLA:CPU has no fast kernel for grouped convolutions, and as shifted multiply-adds a K x K
// depthwise convolution is 3 K^2 instructions to compile (per forward and gradient). Here one
// call is one instruction. At stride 1 an output row is a contiguous run of Wo * C floats and
// each tap adds (input run at an offset) x (the tap's weights tiled along the run): a plain
// vectorised loop however few the channels (the PC-DARTS partial-channel ops have 2-16). Other
// strides take a per-pixel loop over channels. Ranges of (image, output row) are shared out to
// XLA's intra-op thread pool; the weight gradient sums per-range partial results in range
// order (the same bits on every run).
// jaxcompress compiles this file on first use for the host CPU, see `native_build.py`.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "conv_binding.h"
#include "parallel_ranges.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geom {
  int64_t n, h, w, c, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl;
};

int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output columns [lo, hi) whose tap `t` lands inside an input of `size` (stride s, dilation d,
// low padding p).
void ValidRange(int64_t size, int64_t out, int64_t t, int64_t s, int64_t d, int64_t p,
                int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(0, CeilDiv(p - t * d, s));
  *hi = std::min<int64_t>(out, FloorDiv(size - 1 + p - t * d, s) + 1);
  if (*hi < *lo) *hi = *lo;
}

// The kernel's taps tiled along an output row: tiled[t][x * C + c] = w[t, c] (stride 1 only).
std::vector<float> TiledTaps(const Geom& g, const float* w) {
  const int64_t run = g.wo * g.c;
  std::vector<float> tiled(g.kh * g.kw * run);
  for (int64_t t = 0; t < g.kh * g.kw; ++t)
    for (int64_t x = 0; x < g.wo; ++x)
      std::memcpy(&tiled[t * run + x * g.c], w + t * g.c, g.c * sizeof(float));
  return tiled;
}

// Output rows [begin, end) of the flattened (image, row) range.
void ForwardRows(const Geom& g, const float* in, const float* w, const float* tiled, float* out,
                 int64_t begin, int64_t end) {
  const int64_t c = g.c;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / g.ho, y = r % g.ho;
    float* orow = out + r * g.wo * c;
    std::memset(orow, 0, g.wo * c * sizeof(float));
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t iy = y * g.sh + i * g.dh - g.pt;
      if (iy < 0 || iy >= g.h) continue;
      const float* irow = in + (n * g.h + iy) * g.w * c;
      for (int64_t j = 0; j < g.kw; ++j) {
        int64_t lo, hi;
        ValidRange(g.w, g.wo, j, g.sw, g.dw, g.pl, &lo, &hi);
        if (lo >= hi) continue;
        const int64_t t = i * g.kw + j;
        if (g.sw == 1) {
          const float* src = irow + (lo + j * g.dw - g.pl) * c;
          const float* wt = tiled + t * g.wo * c + lo * c;
          float* dst = orow + lo * c;
          const int64_t len = (hi - lo) * c;
          for (int64_t k = 0; k < len; ++k) dst[k] += wt[k] * src[k];
        } else {
          const float* wt = w + t * c;
          for (int64_t x = lo; x < hi; ++x) {
            const float* src = irow + (x * g.sw + j * g.dw - g.pl) * c;
            float* dst = orow + x * c;
            for (int64_t k = 0; k < c; ++k) dst[k] += wt[k] * src[k];
          }
        }
      }
    }
  }
}

// Adds the rows [begin, end)'s contribution to acc[t][x * C + c] (stride 1; reduced over x by
// the caller) or acc[t][c] (other strides).
void WeightGradRows(const Geom& g, const float* in, const float* gy, float* acc, int64_t begin,
                    int64_t end) {
  const int64_t c = g.c, run = g.sw == 1 ? g.wo * c : c;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / g.ho, y = r % g.ho;
    const float* grow = gy + r * g.wo * c;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t iy = y * g.sh + i * g.dh - g.pt;
      if (iy < 0 || iy >= g.h) continue;
      const float* irow = in + (n * g.h + iy) * g.w * c;
      for (int64_t j = 0; j < g.kw; ++j) {
        int64_t lo, hi;
        ValidRange(g.w, g.wo, j, g.sw, g.dw, g.pl, &lo, &hi);
        if (lo >= hi) continue;
        float* a = acc + (i * g.kw + j) * run;
        if (g.sw == 1) {
          const float* src = irow + (lo + j * g.dw - g.pl) * c;
          const float* gs = grow + lo * c;
          float* dst = a + lo * c;
          const int64_t len = (hi - lo) * c;
          for (int64_t k = 0; k < len; ++k) dst[k] += gs[k] * src[k];
        } else {
          for (int64_t x = lo; x < hi; ++x) {
            const float* src = irow + (x * g.sw + j * g.dw - g.pl) * c;
            const float* gs = grow + x * c;
            for (int64_t k = 0; k < c; ++k) a[k] += gs[k] * src[k];
          }
        }
      }
    }
  }
}

// Parts worth a thread: at least kMinRows output rows each.
int64_t Parts(ffi::ThreadPool& pool, int64_t rows) {
  constexpr int64_t kMinRows = 8;
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), rows / kMinRows));
}

// Validates the operands of either handler and fills `g` (`other` is the output or cotangent,
// `kernel` the kernel or its gradient).
ffi::Error MakeGeom(const char* name, ffi::Span<const int64_t> id, ffi::Span<const int64_t> od,
                    ffi::Span<const int64_t> wd, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                    int64_t pt, int64_t pl, Geom* g) {
  const std::string prefix(name);
  if (id.size() != 4 || od.size() != 4 || wd.size() != 3)
    return ffi::Error::InvalidArgument(prefix + ": NHWC operands and a [KH, KW, C] kernel expected");
  if (id[0] != od[0] || id[3] != od[3] || wd[2] != id[3])
    return ffi::Error::InvalidArgument(prefix + ": batch or channel counts differ");
  if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pl < 0)
    return ffi::Error::InvalidArgument(prefix + ": strides/dilations >= 1, pads >= 0 expected");
  *g = Geom{id[0], id[1], id[2], id[3], od[1], od[2], wd[0], wd[1], sh, sw, dh, dw, pt, pl};
  return ffi::Error::Success();
}

ffi::Error DepthwiseConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in,
                             ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> out,
                             int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                             int64_t dilation_w, int64_t pad_top, int64_t pad_left) {
  Geom g;
  ffi::Error err = MakeGeom("depthwise_conv", in.dimensions(), out->dimensions(), w.dimensions(),
                            stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, &g);
  if (err.failure()) return err;
  const int64_t rows = g.n * g.ho;
  if (rows == 0 || g.c == 0) return ffi::Error::Success();
  std::vector<float> tiled;
  if (g.sw == 1) tiled = TiledTaps(g, w.typed_data());
  const float* x = in.typed_data();
  const float* k = w.typed_data();
  float* o = out->typed_data();
  jaxcompress::RunRanges(pool, rows, Parts(pool, rows), [&](int64_t begin, int64_t end) {
    ForwardRows(g, x, k, tiled.data(), o, begin, end);
  });
  return ffi::Error::Success();
}

ffi::Error DepthwiseWeightGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in,
                                   ffi::Buffer<ffi::F32> gy, ffi::ResultBuffer<ffi::F32> dw,
                                   int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                                   int64_t dilation_w, int64_t pad_top, int64_t pad_left) {
  Geom g;
  ffi::Error err = MakeGeom("depthwise_weight_grad", in.dimensions(), gy.dimensions(),
                            dw->dimensions(), stride_h, stride_w, dilation_h, dilation_w,
                            pad_top, pad_left, &g);
  if (err.failure()) return err;
  const int64_t taps = g.kh * g.kw, run = g.sw == 1 ? g.wo * g.c : g.c;
  float* result = dw->typed_data();
  std::memset(result, 0, taps * g.c * sizeof(float));
  const int64_t rows = g.n * g.ho;
  if (rows == 0 || g.c == 0) return ffi::Error::Success();
  const float* x = in.typed_data();
  const float* gv = gy.typed_data();
  // Each range sums into its own buffer; the buffers are then added in range order, so the
  // result does not depend on which thread finished first (bit-identical from run to run).
  const int64_t parts = Parts(pool, rows);
  std::vector<std::vector<float>> partial(parts);
  jaxcompress::RunRanges(pool, rows, parts, [&](int64_t begin, int64_t end) {
    // RunRanges cuts range r at rows * r / parts; with rows >= parts this recovers r.
    std::vector<float>& acc = partial[(begin * parts + rows - 1) / rows];
    acc.assign(taps * run, 0.f);
    WeightGradRows(g, x, gv, acc.data(), begin, end);
  });
  for (const std::vector<float>& acc : partial)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t k = 0; k < run; ++k) result[t * g.c + k % g.c] += acc[t * run + k];
  return ffi::Error::Success();
}

}  // namespace

// Both handlers take (input, kernel or cotangent) and the geometry attributes.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompressDepthwiseConv, DepthwiseConvImpl,
                              jaxcompress::ConvGeometryBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompressDepthwiseWeightGrad, DepthwiseWeightGradImpl,
                              jaxcompress::ConvGeometryBinding());
