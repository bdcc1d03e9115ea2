// PAMS integer convolution on CPU with AMX int8 tiles, as an XLA FFI handler.
//
// out[n, y, x, o] = acc[n, y, x, o] * scale + bias[o], acc = sum_{i, j, c} l[n, y + i - pt,
// x + j - pl, c] * k[i, j, c, o] (int32; zero outside the input), with the input's integer levels
// computed while it is read, exactly as PAMS's activation quantiser (arXiv 2011.04212 eq. 2):
//
//   l = round_half_even(clip(x, -alpha, alpha) * qmax / alpha)      (int8)
//
// Stride 1, no dilation, one group (EDSR / RDN bodies). The levels of the input rows a range of
// output rows reads are written once into a zero-padded int8 buffer (channels padded to 64), so
// 16 neighbouring output pixels of one kernel tap are 16 rows of 64 bytes at a fixed stride: one
// AMX A tile. The kernel is rearranged once per call into B tiles (64 input channels x 16 output
// channels, four bytes per int32 lane), and TDPBSSD accumulates 2 x 2 tiles of 16 pixels x 16
// outputs per step. The float epilogue is applied as the accumulators are stored. Ranges of output
// rows across the batch go to XLA's intra-op thread pool; each worker configures its own tiles.
// jaxcompress compiles this file on first use with the system C++ compiler for the host CPU
// (-march=native, see `native_build.py`); without AMX the handler reports an error and the Python
// side keeps XLA's integer convolution.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__)
#define JC_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "parallel_ranges.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geom {
  int64_t n, h, w, c, ho, wo, o, kh, kw, pt, pl;
  int64_t cp;      // channels padded to 64
  int64_t chunks;  // cp / 64
  int64_t groups;  // output groups of 16
  int64_t wp;      // padded buffer width: max(wo, 16) + kw - 1
};

struct Operands {
  const float* in;
  float alpha, qmax, scale;
  const float* bias;
  const int8_t* tiles;  // [taps][chunks][groups][16 rows][64 bytes]
  float* out;
};

#ifdef JC_AMX
struct TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

bool RequestAmx() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  static const bool ok = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return ok;
}

// PAMS levels of `count` floats (round half to even, as jnp.round).
inline void Quantize(const float* x, int64_t count, float alpha, float qmax, int8_t* out) {
  const __m512 hi = _mm512_set1_ps(alpha), lo = _mm512_set1_ps(-alpha), q = _mm512_set1_ps(qmax);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_loadu_ps(x + i), lo), hi);
    v = _mm512_div_ps(_mm512_mul_ps(v, q), hi);
    const __m512i l = _mm512_cvtps_epi32(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT |
                                                                  _MM_FROUND_NO_EXC));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtsepi32_epi8(l));
  }
  for (; i < count; ++i) {
    const float v = std::min(std::max(x[i], -alpha), alpha) * qmax / alpha;
    out[i] = static_cast<int8_t>(std::nearbyint(v));
  }
}

// Output rows [begin, end) of the batch's n * ho rows.
void RunRange(const Geom& g, const Operands& op, int64_t begin, int64_t end) {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  const int64_t span = std::min<int64_t>(end - begin, g.ho) + g.kh - 1;
  std::vector<int8_t> buffer(span * g.wp * g.cp);
  alignas(64) int32_t acc[4][16][16];
  const int64_t stride = g.cp;  // bytes between neighbouring pixels of a row
  const int64_t tile_bytes = 16 * 64;
  for (int64_t n = begin / g.ho; n * g.ho < end; ++n) {
    const int64_t y0 = std::max<int64_t>(begin - n * g.ho, 0);
    const int64_t y1 = std::min<int64_t>(end - n * g.ho, g.ho);
    // Buffer row b holds input row y0 - pt + b; column p holds input column p - pl.
    std::fill(buffer.begin(), buffer.end(), 0);
    for (int64_t b = 0; b < y1 - y0 + g.kh - 1; ++b) {
      const int64_t iy = y0 - g.pt + b;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t ix = 0; ix < g.w; ++ix)
        Quantize(op.in + ((n * g.h + iy) * g.w + ix) * g.c, g.c, op.alpha, op.qmax,
                 buffer.data() + (b * g.wp + ix + g.pl) * g.cp);
    }
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x0 = 0; x0 < g.wo; x0 += 32) {
        // Two blocks of 16 pixels; a last block starts early to stay inside the buffer (it
        // recomputes some pixels, which get the same values).
        const int64_t xa = std::min<int64_t>(x0, std::max<int64_t>(g.wo - 16, 0));
        const bool two = x0 + 16 < g.wo;
        const int64_t xb = two ? std::min<int64_t>(x0 + 16, std::max<int64_t>(g.wo - 16, 0)) : xa;
        for (int64_t g0 = 0; g0 < g.groups; g0 += 2) {
          const bool pair = g0 + 1 < g.groups;
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j)
              for (int64_t kc = 0; kc < g.chunks; ++kc) {
                const int8_t* row = buffer.data() + ((y - y0 + i) * g.wp + j) * g.cp + kc * 64;
                const int8_t* wt =
                    op.tiles + (((i * g.kw + j) * g.chunks + kc) * g.groups + g0) * tile_bytes;
                _tile_loadd(4, row + xa * stride, stride);
                _tile_loadd(6, wt, 64);
                _tile_dpbssd(0, 4, 6);
                if (pair) {
                  _tile_loadd(7, wt + tile_bytes, 64);
                  _tile_dpbssd(1, 4, 7);
                }
                if (two) {
                  _tile_loadd(5, row + xb * stride, stride);
                  _tile_dpbssd(2, 5, 6);
                  if (pair) _tile_dpbssd(3, 5, 7);
                }
              }
          _tile_stored(0, acc[0], 64);
          if (pair) _tile_stored(1, acc[1], 64);
          if (two) _tile_stored(2, acc[2], 64);
          if (two && pair) _tile_stored(3, acc[3], 64);
          for (int blk = 0; blk < (two ? 2 : 1); ++blk) {
            const int64_t xs = blk ? xb : xa;
            for (int gg = 0; gg < (pair ? 2 : 1); ++gg) {
              const int64_t oc = (g0 + gg) * 16;
              const int lanes = static_cast<int>(std::min<int64_t>(16, g.o - oc));
              const __mmask16 m = static_cast<__mmask16>((1u << lanes) - 1);
              const __m512 s = _mm512_set1_ps(op.scale);
              const __m512 bias = _mm512_maskz_loadu_ps(m, op.bias + oc);
              for (int p = 0; p < 16 && xs + p < g.wo; ++p) {
                const __m512 a = _mm512_cvtepi32_ps(_mm512_load_si512(acc[blk * 2 + gg][p]));
                _mm512_mask_storeu_ps(op.out + ((n * g.ho + y) * g.wo + xs + p) * g.o + oc, m,
                                      _mm512_add_ps(_mm512_mul_ps(a, s), bias));
              }
            }
          }
        }
      }
    }
  }
  _tile_release();
}
#endif

ffi::Error Int8ConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in,
                        ffi::Buffer<ffi::F32> params, ffi::Buffer<ffi::S8> kernel,
                        ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> out,
                        int64_t pad_top, int64_t pad_left) {
#ifndef JC_AMX
  return ffi::Error::Internal("int8_conv: built without AMX");
#else
  if (!RequestAmx()) return ffi::Error::Internal("int8_conv: the kernel refused AMX tiles");
  auto id = in.dimensions();
  auto kd = kernel.dimensions();
  auto od = out->dimensions();
  if (id.size() != 4 || kd.size() != 4 || od.size() != 4 || params.element_count() != 3)
    return ffi::Error::InvalidArgument("int8_conv: NHWC input, HWIO kernel, 3 params expected");
  Geom g{id[0], id[1], id[2], id[3], od[1], od[2], od[3], kd[0], kd[1], pad_top, pad_left,
         (id[3] + 63) / 64 * 64, (id[3] + 63) / 64, (od[3] + 15) / 16, 0};
  g.wp = std::max<int64_t>(g.wo, 16) + g.kw - 1;
  if (kd[2] != g.c || kd[3] != g.o || od[0] != g.n || bias.element_count() != g.o ||
      pad_top < 0 || pad_left < 0 || g.w + g.pl > g.wp || g.kh * g.kw * g.chunks > 4096)
    return ffi::Error::InvalidArgument("int8_conv: operand shapes do not agree");
  const float* p = params.typed_data();
  // B tiles: tile (tap, chunk, group) row r, bytes [4 n, 4 n + 4) = k[tap][64 chunk + 4 r + q][16
  // group + n] for q = 0..3 (zero past c and o).
  const int64_t taps = g.kh * g.kw;
  std::vector<int8_t> tiles(taps * g.chunks * g.groups * 16 * 64, 0);
  const int8_t* k = kernel.typed_data();
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t o = 0; o < g.o; ++o) {
        const int64_t kc = c / 64, r = (c % 64) / 4, q = c % 4, grp = o / 16, nn = o % 16;
        tiles[((((t * g.chunks + kc) * g.groups + grp) * 16 + r) * 64) + nn * 4 + q] =
            k[(t * g.c + c) * g.o + o];
      }
  const Operands op{in.typed_data(), p[0], p[1], p[2], bias.typed_data(), tiles.data(),
                    out->typed_data()};
  const int64_t rows = g.n * g.ho;
  if (rows == 0 || g.wo == 0) return ffi::Error::Success();
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>(static_cast<int64_t>(pool.num_threads()), rows / 4));
  jaxcompress::RunRanges(pool, rows, parts, [&](int64_t b, int64_t e) { RunRange(g, op, b, e); });
  return ffi::Error::Success();
#endif
}

}  // namespace

// 1 when this build has the AMX path (the CPU then still has to grant the tiles at run time).
extern "C" int JaxcompressInt8ConvAmx() {
#ifdef JC_AMX
  return RequestAmx() ? 1 : 0;
#else
  return 0;
#endif
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompressInt8Conv, Int8ConvImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
