// 1-bit (XNOR-popcount) 2-D convolution of a float NHWC input on CPU, as an XLA FFI handler.
//
// out[n, y, x, o] = dot[n, y, x, o] * scale[o] + shift[o], where dot is the +-1 product of the
// binarised input and the packed binary kernel over the taps that fall inside the input (taps in
// the zero padding contribute 0, as in a binary conv padded after its quantiser):
//
//   bit(n, iy, ix, c) = in[n, iy, ix, c] > thr[n]   (rule 0)   or   >= thr[n]   (rule 1)
//   dot = sum_{valid taps, c} (bit == wbit ? +1 : -1)
//
// With exact_zeros, an entry equal to thr[n] contributes 0 instead (RBNN's sign of a centred
// input: sign(0) = 0). The kernel is read as `quant.pack_bits` packs it: K = kh * kw * c bits in
// (tap, channel) order, word w holding bits 32w .. 32w + 31, laid out [words, o].
//
// One pass per input row binarises 16 channels per compare and packs them (NHWC: a pixel's
// channels are contiguous, ceil(c / 32) words per pixel); each output pixel then reads the packed
// words of its taps in place (no im2col) and accumulates popcount(word ^ kernel word) for 16
// output channels per vector, with AVX-512 VPOPCNTDQ where the CPU has it, else AVX2 nibble
// tables, else scalar popcounts (the Python side uses the XLA path instead of that last one).
// Taps in the padding are skipped (the count of valid bits replaces K), and the per-channel scale
// and shift are applied in the same pass that stores the output. Ranges of output rows across the batch are shared out to
// XLA's intra-op thread pool; each range packs the input rows it reads and writes its own output
// rows, so the result does not depend on the split. jaxcompress compiles this file on first use
// with the system C++ compiler for the host CPU (-march=native), see `native_build.py`.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "parallel_ranges.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;  // output channels per lane block
typedef float f16v __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));

// ---- 16 uint32 lanes with XOR / AND popcount accumulation, per instruction set. ----
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
constexpr int kPath = 2;
struct Lanes {
  __m512i v;
};
inline Lanes Zero() { return {_mm512_setzero_si512()}; }
inline Lanes Load(const uint32_t* p, int lanes) {
  if (lanes == kLanes) return {_mm512_loadu_si512(p)};
  return {_mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << lanes) - 1), p)};
}
inline void XorPop(Lanes& acc, uint32_t a, const Lanes& w) {
  acc.v = _mm512_add_epi32(acc.v, _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_set1_epi32(a), w.v)));
}
inline void AndPop(Lanes& acc, uint32_t a, const Lanes& w) {
  acc.v = _mm512_add_epi32(acc.v, _mm512_popcnt_epi32(_mm512_and_si512(_mm512_set1_epi32(a), w.v)));
}
inline i16v ToInts(const Lanes& l) {
  i16v out;
  _mm512_storeu_si512(&out, l.v);
  return out;
}
#elif defined(__AVX2__)
constexpr int kPath = 1;
struct Lanes {
  __m256i lo, hi;
};
inline Lanes Zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
inline Lanes Load(const uint32_t* p, int lanes) {
  if (lanes == kLanes)
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8))};
  alignas(32) uint32_t tmp[kLanes] = {};
  std::memcpy(tmp, p, lanes * sizeof(uint32_t));
  return {_mm256_load_si256(reinterpret_cast<const __m256i*>(tmp)),
          _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp + 8))};
}
// Popcount of each 32-bit lane: nibble table lookups (vpshufb), then byte sums per lane.
inline __m256i Pop32(__m256i v) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i bytes = _mm256_add_epi8(
      _mm256_shuffle_epi8(table, _mm256_and_si256(v, nibble)),
      _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi32(v, 4), nibble)));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(bytes, _mm256_set1_epi8(1)),
                           _mm256_set1_epi16(1));
}
inline void XorPop(Lanes& acc, uint32_t a, const Lanes& w) {
  const __m256i b = _mm256_set1_epi32(static_cast<int>(a));
  acc.lo = _mm256_add_epi32(acc.lo, Pop32(_mm256_xor_si256(b, w.lo)));
  acc.hi = _mm256_add_epi32(acc.hi, Pop32(_mm256_xor_si256(b, w.hi)));
}
inline void AndPop(Lanes& acc, uint32_t a, const Lanes& w) {
  const __m256i b = _mm256_set1_epi32(static_cast<int>(a));
  acc.lo = _mm256_add_epi32(acc.lo, Pop32(_mm256_and_si256(b, w.lo)));
  acc.hi = _mm256_add_epi32(acc.hi, Pop32(_mm256_and_si256(b, w.hi)));
}
inline i16v ToInts(const Lanes& l) {
  i16v out;
  std::memcpy(&out, &l.lo, 32);
  std::memcpy(reinterpret_cast<char*>(&out) + 32, &l.hi, 32);
  return out;
}
#else
constexpr int kPath = 0;
struct Lanes {
  uint32_t v[kLanes];
};
inline Lanes Zero() { return Lanes{}; }
inline Lanes Load(const uint32_t* p, int lanes) {
  Lanes l{};
  std::memcpy(l.v, p, lanes * sizeof(uint32_t));
  return l;
}
inline void XorPop(Lanes& acc, uint32_t a, const Lanes& w) {
  for (int l = 0; l < kLanes; ++l) acc.v[l] += __builtin_popcount(a ^ w.v[l]);
}
inline void AndPop(Lanes& acc, uint32_t a, const Lanes& w) {
  for (int l = 0; l < kLanes; ++l) acc.v[l] += __builtin_popcount(a & w.v[l]);
}
inline i16v ToInts(const Lanes& l) {
  i16v out;
  std::memcpy(&out, l.v, sizeof(out));
  return out;
}
#endif

// Partial counts between flushes into Lanes. AVX2 keeps per-byte popcounts (one vpaddb per word,
// at most 8 per byte and step) and widens them to the 32-bit lanes every kByteSteps words (31 * 8
// < 256) and at the end of a pixel, instead of widening every word; elsewhere Partial is Lanes.
#if defined(__AVX2__) && !(defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__))
constexpr int kByteSteps = 31;
struct Partial {
  __m256i lo, hi;
};
inline Partial ZeroPartial() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
inline __m256i PopBytes(__m256i v) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  return _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(v, nibble)),
                         _mm256_shuffle_epi8(table,
                                             _mm256_and_si256(_mm256_srli_epi32(v, 4), nibble)));
}
inline void XorPopPartial(Partial& part, uint32_t a, const Lanes& w) {
  const __m256i b = _mm256_set1_epi32(static_cast<int>(a));
  part.lo = _mm256_add_epi8(part.lo, PopBytes(_mm256_xor_si256(b, w.lo)));
  part.hi = _mm256_add_epi8(part.hi, PopBytes(_mm256_xor_si256(b, w.hi)));
}
inline void Flush(Lanes& acc, Partial& part) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(_mm256_maddubs_epi16(part.lo, ones8), ones16));
  acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(_mm256_maddubs_epi16(part.hi, ones8), ones16));
  part = ZeroPartial();
}
#else
constexpr int kByteSteps = 1 << 30;
using Partial = Lanes;
inline Partial ZeroPartial() { return Zero(); }
inline void XorPopPartial(Partial& part, uint32_t a, const Lanes& w) { XorPop(part, a, w); }
inline void Flush(Lanes& acc, Partial& part) {
  const i16v sum = ToInts(acc) + ToInts(part);
  std::memcpy(&acc, &sum, sizeof(sum));
  part = ZeroPartial();
}
#endif

struct Geom {
  int64_t n, h, w, c, ho, wo, o, kh, kw, sh, sw, dh, dw, pt, pl;
  int64_t cw;      // packed words per input pixel: ceil(c / 32)
  int64_t words;   // kernel words: ceil(kh * kw * c / 32)
  int64_t rule;    // 0: x > thr, 1: x >= thr
  bool exact_zeros;
  bool residual;       // add `residual` (the output's shape) after the scale and shift
  int64_t activation;  // then 0: none, 1: hard_tanh
  bool in_packed;      // the input is already packed words [n, h, w, cw]
  bool out_packed;     // write the output's bits (y >= 0) as words [n, ho, wo, ocw], not floats
  int64_t ocw;         // output words per pixel: ceil(o / 32)
  bool thr_shared;     // one threshold for every image
};

struct Operands {
  const float* in;
  const uint32_t* in_bits;  // when Geom::in_packed
  const float* thr;
  const uint32_t* kernel;  // [words, o]
  const float* scale;
  const float* shift;
  const float* residual;  // [n, ho, wo, o] when Geom::residual
  float* out;
  uint32_t* out_bits;  // when Geom::out_packed
};

// The epilogue after the scale and shift: the residual add and the activation the network applies
// next (jax.nn.hard_tanh's where(y > 1, 1, where(y < -1, -1, y)): NaN passes through). `at` is
// the output offset of the block's first element; `bytes` how much of it is real.
inline f16v Epilogue(const Geom& g, const Operands& op, f16v y, int64_t at, size_t bytes) {
  if (g.residual) {
    f16v r = {};
    std::memcpy(&r, op.residual + at, bytes);
    y += r;
  }
  if (g.activation == 1) {
    const f16v zero = {};
    const f16v hi = zero + 1.0f, lo = zero - 1.0f;
    y = y > hi ? hi : (y < lo ? lo : y);
  }
  return y;
}

// Stores channels [oc, oc + 16) (`bytes` of them real) of output pixel `pixel` after the epilogue:
// as floats, or as the bits (y >= 0, the next binary conv's larq sign) of the output's packed
// words, 16 channels per half word (o is then a multiple of 16).
inline void Store(const Geom& g, const Operands& op, f16v y, int64_t pixel, int64_t oc,
                  size_t bytes) {
  y = Epilogue(g, op, y, pixel * g.o + oc, bytes);
  if (!g.out_packed) {
    std::memcpy(op.out + pixel * g.o + oc, &y, bytes);
    return;
  }
#if defined(__AVX512F__)
  const uint16_t mask = _mm512_cmp_ps_mask(reinterpret_cast<__m512&>(y), _mm512_setzero_ps(),
                                           _CMP_GE_OQ);
#else
  uint16_t mask = 0;
  for (int l = 0; l < kLanes; ++l) mask |= static_cast<uint16_t>(y[l] >= 0.0f) << l;
#endif
  uint16_t* half = reinterpret_cast<uint16_t*>(op.out_bits + pixel * g.ocw);
  half[oc / 16] = mask;
  if (oc + kLanes == g.o && g.o % 32) half[oc / 16 + 1] = 0;  // the last word's unused half
}

// Packs channels [32 w, 32 w + 32) of one pixel; `zero` gets the entries equal to the threshold.
inline void PackPixel(const Geom& g, const float* px, float thr, uint32_t* bits, uint32_t* zero) {
  for (int64_t w = 0; w < g.cw; ++w) {
    uint32_t b = 0, z = 0;
    const int64_t c0 = 32 * w, c1 = std::min<int64_t>(g.c, c0 + 32);
#if defined(__AVX512F__)
    const __m512 t = _mm512_set1_ps(thr);
    for (int64_t c = c0; c < c1; c += 16) {
      const int lanes = static_cast<int>(std::min<int64_t>(16, c1 - c));
      const __mmask16 m = static_cast<__mmask16>((1u << lanes) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(m, px + c);
      const uint32_t gt = g.rule == 0 ? _mm512_mask_cmp_ps_mask(m, v, t, _CMP_GT_OQ)
                                      : _mm512_mask_cmp_ps_mask(m, v, t, _CMP_GE_OQ);
      b |= gt << (c - c0);
      if (zero) z |= static_cast<uint32_t>(_mm512_mask_cmp_ps_mask(m, v, t, _CMP_EQ_OQ)) << (c - c0);
    }
#else
    for (int64_t c = c0; c < c1; ++c) {
      const float v = px[c];
      const bool on = g.rule == 0 ? v > thr : v >= thr;
      b |= static_cast<uint32_t>(on) << (c - c0);
      z |= static_cast<uint32_t>(v == thr) << (c - c0);
    }
#endif
    bits[w] = b;
    if (zero) zero[w] = z;
  }
}

// Packs one input row of w pixels. With c a multiple of 16, the row's floats are 16-channel
// chunks whose compare masks are the packed words' halves (c = 16: one chunk per word, the upper
// half 0), so the row is one compare per 16 floats; otherwise pixel by pixel.
void PackRow(const Geom& g, const float* in, float thr, uint32_t* bits, uint32_t* zero) {
#if defined(__AVX512F__)
  if (g.c % 16 == 0) {
    const __m512 t = _mm512_set1_ps(thr);
    const int64_t chunks = g.w * g.c / 16;
    uint16_t* half = reinterpret_cast<uint16_t*>(bits);
    uint16_t* zhalf = reinterpret_cast<uint16_t*>(zero);
    for (int64_t q = 0; q < chunks; ++q) {
      const __m512 v = _mm512_loadu_ps(in + 16 * q);
      const uint16_t m = g.rule == 0 ? _mm512_cmp_ps_mask(v, t, _CMP_GT_OQ)
                                     : _mm512_cmp_ps_mask(v, t, _CMP_GE_OQ);
      const uint16_t zm = zero ? _mm512_cmp_ps_mask(v, t, _CMP_EQ_OQ) : 0;
      if (g.c == 16) {
        bits[q] = m;
        if (zero) zero[q] = zm;
      } else {
        half[q] = m;
        if (zero) zhalf[q] = zm;
      }
    }
    return;
  }
#elif defined(__AVX2__)
  if (g.c % 16 == 0 && !zero) {
    const __m256 t = _mm256_set1_ps(thr);
    const int64_t chunks = g.w * g.c / 16;
    uint16_t* half = reinterpret_cast<uint16_t*>(bits);
    for (int64_t q = 0; q < chunks; ++q) {
      const __m256 a = _mm256_loadu_ps(in + 16 * q), b = _mm256_loadu_ps(in + 16 * q + 8);
      const int lo = _mm256_movemask_ps(g.rule == 0 ? _mm256_cmp_ps(a, t, _CMP_GT_OQ)
                                                    : _mm256_cmp_ps(a, t, _CMP_GE_OQ));
      const int hi = _mm256_movemask_ps(g.rule == 0 ? _mm256_cmp_ps(b, t, _CMP_GT_OQ)
                                                    : _mm256_cmp_ps(b, t, _CMP_GE_OQ));
      const uint16_t m = static_cast<uint16_t>(lo | (hi << 8));
      if (g.c == 16) {
        bits[q] = m;
      } else {
        half[q] = m;
      }
    }
    return;
  }
#endif
  for (int64_t x = 0; x < g.w; ++x)
    PackPixel(g, in + x * g.c, thr, bits + x * g.cw, zero ? zero + x * g.cw : nullptr);
}

// The kernel as per-tap words, [taps * cw, o]: pack_bits' (tap, channel) rows already are when
// c is a multiple of 32; when c divides 32, 32 / c taps share a word and are split out here
// (taps * o shifts per call).
const uint32_t* TapWords(const Geom& g, const uint32_t* kernel, std::vector<uint32_t>* buffer) {
  if (g.c % 32 == 0) return kernel;
  const int64_t per_word = 32 / g.c, taps = g.kh * g.kw;
  const uint32_t mask = g.c == 32 ? ~0u : (1u << g.c) - 1;
  buffer->resize(taps * g.o);
  for (int64_t t = 0; t < taps; ++t) {
    const uint32_t* src = kernel + (t / per_word) * g.o;
    const int shift = static_cast<int>(g.c * (t % per_word));
    for (int64_t o = 0; o < g.o; ++o) (*buffer)[t * g.o + o] = (src[o] >> shift) & mask;
  }
  return buffer->data();
}

// Output channels [o0, o0 + V * 16) of output pixel (y, x) of one image whose packed input rows
// start at row r0; with kFull false, V == 1 and only `lanes` of them (the last, partial block).
// Taps outside the input are skipped (they multiply the zero padding).
template <int V, bool kFull>
inline void PixelBlock(const Geom& g, const Operands& op, const uint32_t* taps_w,
                       const uint32_t* packed, const uint32_t* zpacked, int64_t r0, int64_t y,
                       int64_t x, int64_t o0, int lanes, int64_t pixel) {
  static_assert(kFull || V == 1, "a partial block is a single vector");
  const int width = kFull ? kLanes : lanes;
  const int64_t y0 = y * g.sh - g.pt, x0 = x * g.sw - g.pl;
  Lanes acc[V], zacc[V];
  for (int v = 0; v < V; ++v) acc[v] = zacc[v] = Zero();
  int64_t valid = 0;
  int zcount = 0;
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t iy = y0 + i * g.dh;
    if (iy < 0 || iy >= g.h) continue;
    const int64_t row = (iy - r0) * g.w;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t ix = x0 + j * g.dw;
      if (ix < 0 || ix >= g.w) continue;
      ++valid;
      const uint32_t* src = packed + (row + ix) * g.cw;
      const uint32_t* kern = taps_w + (i * g.kw + j) * g.cw * g.o + o0;
      for (int64_t w = 0; w < g.cw; ++w) {
        const uint32_t a = src[w];
        for (int v = 0; v < V; ++v) XorPop(acc[v], a, Load(kern + w * g.o + kLanes * v, width));
      }
      if (zpacked) {
        const uint32_t* zsrc = zpacked + (row + ix) * g.cw;
        for (int64_t w = 0; w < g.cw; ++w) {
          const uint32_t z = zsrc[w];
          if (!z) continue;
          zcount += __builtin_popcount(z);
          for (int v = 0; v < V; ++v)
            AndPop(zacc[v], z, Load(kern + w * g.o + kLanes * v, width));
        }
      }
    }
  }
  const int32_t bits = static_cast<int32_t>(valid * g.c);
  const size_t bytes = width * sizeof(float);
  for (int v = 0; v < V; ++v) {
    const int64_t oc = o0 + kLanes * v;
    // bits - 2 popcount(a ^ w) over the taps inside; an exact zero counted -w, which +w
    // (2 popcount(z & w) - |z|) undoes.
    i16v dot = bits - 2 * ToInts(acc[v]);
    if (zcount) dot += 2 * ToInts(zacc[v]) - zcount;
    f16v scale = {}, shift = {};
    std::memcpy(&scale, op.scale + oc, bytes);
    std::memcpy(&shift, op.shift + oc, bytes);
    Store(g, op, __builtin_convertvector(dot, f16v) * scale + shift, pixel, oc, bytes);
  }
}

// Where an output region's taps read: tap t of output pixel (y, x) reads packed words
// [base(y, x) + offset[t], ... + cw) with base(y, x) = ((y * sh - pt - r0) * w + x * sw - pl) * cw,
// and its kernel words start at kern[t]. Only taps inside the input are listed.
struct Taps {
  int64_t offset[64];
  const uint32_t* kern[64];
  int n = 0;
};
constexpr int kMaxTaps = 64;  // larger kernels take the general path

// The fast path: output rows [ya, yb) x columns [xa, xb), all reading the taps `taps`; full blocks
// of output channels [o0, o0 + V * 16), CW packed words per pixel (0: g.cw at run time), P pixels
// at a time (P * V independent accumulators hide the popcount latency and share each kernel
// load). Scale and shift stay in registers across the region.
template <int CW, int V, int P>
void Region(const Geom& g, const Operands& op, const uint32_t* packed, int64_t r0,
            const Taps& taps, int64_t ya, int64_t yb, int64_t xa, int64_t xb, int64_t n,
            int64_t o0) {
  const int64_t cw = CW ? CW : g.cw;
  const int64_t step = g.sw * cw;
  f16v scale[V], shift[V];
  for (int v = 0; v < V; ++v) {
    std::memcpy(&scale[v], op.scale + o0 + kLanes * v, sizeof(f16v));
    std::memcpy(&shift[v], op.shift + o0 + kLanes * v, sizeof(f16v));
  }
  const int32_t bits = static_cast<int32_t>(taps.n * g.c);
  for (int64_t y = ya; y < yb; ++y) {
    const int64_t row_base = ((y * g.sh - g.pt - r0) * g.w - g.pl) * cw;
    const int64_t row_pixel = (n * g.ho + y) * g.wo;
    int64_t x = xa;
    auto pixels = [&](auto p_count) {
      constexpr int Q = decltype(p_count)::value;
      Lanes acc[Q][V];
      Partial part[Q][V];
      for (int p = 0; p < Q; ++p)
        for (int v = 0; v < V; ++v) acc[p][v] = Zero(), part[p][v] = ZeroPartial();
      const uint32_t* base = packed + row_base + x * step;
      int steps = 0;
      for (int t = 0; t < taps.n; ++t) {
        const uint32_t* src = base + taps.offset[t];
        const uint32_t* k = taps.kern[t] + o0;
        for (int64_t w = 0; w < cw; ++w) {
          Lanes kv[V];
          for (int v = 0; v < V; ++v) kv[v] = Load(k + w * g.o + kLanes * v, kLanes);
          for (int p = 0; p < Q; ++p) {
            const uint32_t a = src[p * step + w];
            for (int v = 0; v < V; ++v) XorPopPartial(part[p][v], a, kv[v]);
          }
          if (++steps == kByteSteps) {
            for (int p = 0; p < Q; ++p)
              for (int v = 0; v < V; ++v) Flush(acc[p][v], part[p][v]);
            steps = 0;
          }
        }
      }
      for (int p = 0; p < Q; ++p)
        for (int v = 0; v < V; ++v) Flush(acc[p][v], part[p][v]);
      for (int p = 0; p < Q; ++p)
        for (int v = 0; v < V; ++v)
          Store(g, op,
                __builtin_convertvector(bits - 2 * ToInts(acc[p][v]), f16v) * scale[v] + shift[v],
                row_pixel + x + p, o0 + kLanes * v, sizeof(f16v));
    };
    for (; x + P <= xb; x += P) pixels(std::integral_constant<int, P>());
    for (; x < xb; ++x) pixels(std::integral_constant<int, 1>());
  }
}

template <int CW>
void RegionBlocks(const Geom& g, const Operands& op, const uint32_t* packed, int64_t r0,
                  const Taps& taps, int64_t ya, int64_t yb, int64_t xa, int64_t xb, int64_t n) {
  const int64_t full_blocks = g.o / kLanes;
  int64_t b = 0;
  for (; b + 4 <= full_blocks; b += 4)
    Region<CW, 4, 1>(g, op, packed, r0, taps, ya, yb, xa, xb, n, b * kLanes);
  for (; b + 2 <= full_blocks; b += 2)
    Region<CW, 2, 2>(g, op, packed, r0, taps, ya, yb, xa, xb, n, b * kLanes);
  for (; b < full_blocks; ++b)
    Region<CW, 1, 4>(g, op, packed, r0, taps, ya, yb, xa, xb, n, b * kLanes);
}

// The taps of output region rows [ya, ...) x columns [xa, ...) inside the input, judged at
// (ya, xa) for the dimensions where the region is one row / column wide (a border), and taken
// all for the others (the interior, where every tap is inside).
void RegionTaps(const Geom& g, const uint32_t* taps_w, int64_t ya, bool row_border, int64_t xa,
                bool col_border, Taps* taps) {
  taps->n = 0;
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t iy = ya * g.sh + i * g.dh - g.pt;
    if (row_border && (iy < 0 || iy >= g.h)) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t ix = xa * g.sw + j * g.dw - g.pl;
      if (col_border && (ix < 0 || ix >= g.w)) continue;
      taps->offset[taps->n] = (i * g.dh * g.w + j * g.dw) * g.cw;
      taps->kern[taps->n++] = taps_w + (i * g.kw + j) * g.cw * g.o;
    }
  }
}

#if defined(__AVX512BW__) && defined(__AVX512BITALG__) && defined(__AVX512VPOPCNTDQ__)
constexpr bool kPairs = true;
// The 16-channel fast path (ResNet stage 1): a 16-channel tap fills half of a 32-bit word, so two
// neighbouring output pixels (stride 1) share one: `pairs` holds packed[p] | packed[p + 1] << 16,
// each kernel lane its tap word in both halves, and 16-bit popcounts count both pixels at once
// (half the popcounts). Rows [ya, yb) x columns [xa, xb) of the interior, output channels
// [o0, o0 + V * 16), P pairs at a time.
template <int V, int P>
void RegionPairs(const Geom& g, const Operands& op, const uint32_t* packed,
                 const uint32_t* pairs, int64_t r0, const Taps& taps, const uint32_t* taps_w,
                 const uint32_t* dup, int64_t ya, int64_t yb, int64_t xa, int64_t xb, int64_t n,
                 int64_t o0) {
  f16v scale[V], shift[V];
  for (int v = 0; v < V; ++v) {
    std::memcpy(&scale[v], op.scale + o0 + kLanes * v, sizeof(f16v));
    std::memcpy(&shift[v], op.shift + o0 + kLanes * v, sizeof(f16v));
  }
  const int32_t bits = static_cast<int32_t>(taps.n * g.c);
  const __m512i low = _mm512_set1_epi32(0xffff);
  for (int64_t y = ya; y < yb; ++y) {
    const int64_t row_base = (y * g.sh - g.pt - r0) * g.w - g.pl;
    const int64_t row_pixel = (n * g.ho + y) * g.wo;
    int64_t x = xa;
    auto pixels = [&](auto p_count) {
      constexpr int Q = decltype(p_count)::value;
      __m512i acc[Q][V];
      for (int p = 0; p < Q; ++p)
        for (int v = 0; v < V; ++v) acc[p][v] = _mm512_setzero_si512();
      const uint32_t* base = pairs + row_base + x;
      for (int t = 0; t < taps.n; ++t) {
        const uint32_t* src = base + taps.offset[t];
        const uint32_t* k = dup + (taps.kern[t] - taps_w) + o0;
        __m512i kv[V];
        for (int v = 0; v < V; ++v) kv[v] = _mm512_loadu_si512(k + kLanes * v);
        for (int p = 0; p < Q; ++p) {
          const __m512i a = _mm512_set1_epi32(static_cast<int>(src[2 * p]));
          for (int v = 0; v < V; ++v)
            acc[p][v] = _mm512_add_epi32(acc[p][v],
                                         _mm512_popcnt_epi16(_mm512_xor_si512(a, kv[v])));
        }
      }
      for (int p = 0; p < Q; ++p)
        for (int v = 0; v < V; ++v) {
          i16v first, second;
          _mm512_storeu_si512(&first, _mm512_and_si512(acc[p][v], low));
          _mm512_storeu_si512(&second, _mm512_srli_epi32(acc[p][v], 16));
          Store(g, op, __builtin_convertvector(bits - 2 * first, f16v) * scale[v] + shift[v],
                row_pixel + x + 2 * p, o0 + kLanes * v, sizeof(f16v));
          Store(g, op, __builtin_convertvector(bits - 2 * second, f16v) * scale[v] + shift[v],
                row_pixel + x + 2 * p + 1, o0 + kLanes * v, sizeof(f16v));
        }
    };
    for (; x + 2 * P <= xb; x += 2 * P) pixels(std::integral_constant<int, P>());
    for (; x + 2 <= xb; x += 2) pixels(std::integral_constant<int, 1>());
    if (x < xb) Region<1, V, 1>(g, op, packed, r0, taps, y, y + 1, x, xb, n, o0);
  }
}
#else
constexpr bool kPairs = false;
#endif

void RegionDispatch(const Geom& g, const Operands& op, const uint32_t* packed, int64_t r0,
                    const Taps& taps, int64_t ya, int64_t yb, int64_t xa, int64_t xb, int64_t n) {
  if (ya >= yb || xa >= xb) return;
  switch (g.cw) {
    case 1: RegionBlocks<1>(g, op, packed, r0, taps, ya, yb, xa, xb, n); break;
    case 2: RegionBlocks<2>(g, op, packed, r0, taps, ya, yb, xa, xb, n); break;
    case 4: RegionBlocks<4>(g, op, packed, r0, taps, ya, yb, xa, xb, n); break;
    default: RegionBlocks<0>(g, op, packed, r0, taps, ya, yb, xa, xb, n);
  }
}

// Every output channel block of pixel x of output row y through the general PixelBlock.
void GeneralPixel(const Geom& g, const Operands& op, const uint32_t* taps_w, const uint32_t* pk,
                  const uint32_t* z, int64_t r0, int64_t n, int64_t y, int64_t x,
                  int64_t first_block) {
  const int64_t full_blocks = g.o / kLanes;
  const int tail = static_cast<int>(g.o % kLanes);
  const int64_t pixel = (n * g.ho + y) * g.wo + x;
  int64_t b = first_block;
  for (; b + 4 <= full_blocks; b += 4)
    PixelBlock<4, true>(g, op, taps_w, pk, z, r0, y, x, b * kLanes, kLanes, pixel);
  for (; b + 2 <= full_blocks; b += 2)
    PixelBlock<2, true>(g, op, taps_w, pk, z, r0, y, x, b * kLanes, kLanes, pixel);
  for (; b < full_blocks; ++b)
    PixelBlock<1, true>(g, op, taps_w, pk, z, r0, y, x, b * kLanes, kLanes, pixel);
  if (tail) PixelBlock<1, false>(g, op, taps_w, pk, z, r0, y, x, b * kLanes, tail, pixel);
}

// Output positions [lo, hi) whose taps along one dimension all fall inside an input of `size`.
void InsideRange(int64_t size, int64_t out, int64_t k, int64_t s, int64_t d, int64_t p,
                 int64_t* lo, int64_t* hi) {
  *lo = std::min<int64_t>(out, (p + s - 1) / s);
  *hi = std::max<int64_t>(*lo, std::min<int64_t>(out, (size - 1 + p - (k - 1) * d) / s + 1));
}

// Output rows [begin, end) of the batch's n * ho rows.
void RunRange(const Geom& g, const Operands& op, int64_t begin, int64_t end) {
  const int64_t span = std::min<int64_t>(g.h, (end - begin) * g.sh + (g.kh - 1) * g.dh + 1);
  std::vector<uint32_t> packed(g.in_packed ? 0 : span * g.w * g.cw), zpacked, split;
  if (g.exact_zeros) zpacked.resize(packed.size());
  const uint32_t* taps_w = TapWords(g, op.kernel, &split);
  const int64_t full_blocks = g.o / kLanes;
  int64_t x_lo, x_hi, y_lo, y_hi;
  InsideRange(g.w, g.wo, g.kw, g.sw, g.dw, g.pl, &x_lo, &x_hi);
  InsideRange(g.h, g.ho, g.kh, g.sh, g.dh, g.pt, &y_lo, &y_hi);
  const bool general = g.kh * g.kw > kMaxTaps;
  // 16 channels at stride 1: two output pixels per popcount (RegionPairs).
  const bool use_pairs = kPairs && g.c == 16 && g.sw == 1 && !general;
  std::vector<uint32_t> pairs, dup;
  if (use_pairs) {
    pairs.resize(span * g.w);
    dup.resize(g.kh * g.kw * g.o);
    for (size_t k = 0; k < dup.size(); ++k) dup[k] = taps_w[k] | (taps_w[k] << 16);
  }
  Taps taps;
  for (int64_t n = begin / g.ho; n * g.ho < end; ++n) {
    const int64_t y0 = std::max<int64_t>(begin - n * g.ho, 0);
    const int64_t y1 = std::min<int64_t>(end - n * g.ho, g.ho);
    const int64_t r0 = std::max<int64_t>(0, y0 * g.sh - g.pt);
    const int64_t r1 = std::min<int64_t>(g.h, (y1 - 1) * g.sh + (g.kh - 1) * g.dh - g.pt + 1);
    const float thr = op.thr[g.thr_shared ? 0 : n];
    if (!g.in_packed)
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = (r - r0) * g.w * g.cw;
        PackRow(g, op.in + (n * g.h + r) * g.w * g.c, thr, packed.data() + p,
                g.exact_zeros ? zpacked.data() + p : nullptr);
      }
    bool any_zero = false;
    if (g.exact_zeros)
      for (int64_t p = 0; p < (r1 - r0) * g.w * g.cw && !any_zero; ++p) any_zero = zpacked[p] != 0;
    const uint32_t* z = any_zero ? zpacked.data() : nullptr;
    // A packed input is read in place: its rows from r0 on.
    const uint32_t* pk = g.in_packed ? op.in_bits + (n * g.h + r0) * g.w * g.cw : packed.data();
    if (use_pairs) {
      const int64_t count = (r1 - r0) * g.w;
      for (int64_t p = 0; p + 1 < count; ++p) pairs[p] = pk[p] | (pk[p + 1] << 16);
      if (count) pairs[count - 1] = pk[count - 1];
    }
    if (z || general || full_blocks == 0) {  // exact zeros, huge kernels, < 16 outputs
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = 0; x < g.wo; ++x) GeneralPixel(g, op, taps_w, pk, z, r0, n, y, x, 0);
      continue;
    }
    // Rows: border rows one by one, the interior rows [ya, yb) together; the same for columns.
    const int64_t ya = std::clamp(y_lo, y0, y1), yb = std::clamp(y_hi, ya, y1);
    auto rows = [&](int64_t ra, int64_t rb, bool row_border) {
      if (ra >= rb) return;
      for (int64_t x = 0; x < x_lo; ++x) {
        RegionTaps(g, taps_w, ra, row_border, x, true, &taps);
        RegionDispatch(g, op, pk, r0, taps, ra, rb, x, x + 1, n);
      }
      RegionTaps(g, taps_w, ra, row_border, x_lo, false, &taps);
#if defined(__AVX512BW__) && defined(__AVX512BITALG__) && defined(__AVX512VPOPCNTDQ__)
      if (use_pairs) {
        int64_t b = 0;
        for (; b + 2 <= full_blocks; b += 2)
          RegionPairs<2, 2>(g, op, pk, pairs.data(), r0, taps, taps_w, dup.data(), ra, rb, x_lo,
                            x_hi, n, b * kLanes);
        for (; b < full_blocks; ++b)
          RegionPairs<1, 4>(g, op, pk, pairs.data(), r0, taps, taps_w, dup.data(), ra, rb, x_lo,
                            x_hi, n, b * kLanes);
      } else {
        RegionDispatch(g, op, pk, r0, taps, ra, rb, x_lo, x_hi, n);
      }
#else
      RegionDispatch(g, op, pk, r0, taps, ra, rb, x_lo, x_hi, n);
#endif
      for (int64_t x = x_hi; x < g.wo; ++x) {
        RegionTaps(g, taps_w, ra, row_border, x, true, &taps);
        RegionDispatch(g, op, pk, r0, taps, ra, rb, x, x + 1, n);
      }
    };
    for (int64_t y = y0; y < ya; ++y) rows(y, y + 1, true);
    rows(ya, yb, false);
    for (int64_t y = yb; y < y1; ++y) rows(y, y + 1, true);
    if (g.o % kLanes)  // the partial block of output channels
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = 0; x < g.wo; ++x) GeneralPixel(g, op, taps_w, pk, z, r0, n, y, x, full_blocks);
  }
}

ffi::Error BinaryConvImpl(ffi::ThreadPool pool, ffi::AnyBuffer in, ffi::Buffer<ffi::F32> thr,
                          ffi::Buffer<ffi::U32> kernel, ffi::Buffer<ffi::F32> scale,
                          ffi::Buffer<ffi::F32> shift, ffi::Buffer<ffi::F32> residual,
                          ffi::Result<ffi::AnyBuffer> out, int64_t kernel_h, int64_t kernel_w,
                          int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                          int64_t dilation_w, int64_t pad_top, int64_t pad_left, int64_t rule,
                          int64_t exact_zeros, int64_t has_residual, int64_t activation,
                          int64_t channels) {
  auto id = in.dimensions();
  auto kd = kernel.dimensions();
  auto od = out->dimensions();
  if (id.size() != 4 || kd.size() != 2 || od.size() != 4)
    return ffi::Error::InvalidArgument("binary_conv: NHWC input, [words, o] kernel expected");
  const bool in_packed = in.element_type() == ffi::DataType::U32;
  const bool out_packed = out->element_type() == ffi::DataType::U32;
  if ((!in_packed && in.element_type() != ffi::DataType::F32) ||
      (!out_packed && out->element_type() != ffi::DataType::F32))
    return ffi::Error::InvalidArgument("binary_conv: float32 or packed uint32 input and output");
  const int64_t c = in_packed ? channels : id[3], o = kd[1];
  Geom g{id[0], id[1], id[2], c, od[1], od[2], o, kernel_h, kernel_w, stride_h, stride_w,
         dilation_h, dilation_w, pad_top, pad_left, (c + 31) / 32,
         (kernel_h * kernel_w * c + 31) / 32, rule, exact_zeros != 0, has_residual != 0,
         activation, in_packed, out_packed, (o + 31) / 32, thr.element_count() == 1};
  if (c <= 0 || (c % 32 != 0 && 32 % c != 0))
    return ffi::Error::InvalidArgument("binary_conv: channels must divide or be a multiple of 32");
  if (od[0] != g.n || kd[0] != g.words || od[3] != (out_packed ? g.ocw : o) ||
      (in_packed && id[3] != g.cw) || (thr.element_count() != g.n && !g.thr_shared) ||
      scale.element_count() != o || shift.element_count() != o ||
      (g.residual && residual.element_count() != g.n * g.ho * g.wo * o))
    return ffi::Error::InvalidArgument("binary_conv: operand shapes do not agree");
  if ((out_packed && o % 16 != 0) || (in_packed && exact_zeros))
    return ffi::Error::InvalidArgument("binary_conv: packed output needs o % 16 == 0, packed "
                                       "input no exact zeros");
  if (g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.pt < 0 || g.pl < 0 || rule < 0 ||
      rule > 1 || activation < 0 || activation > 1)
    return ffi::Error::InvalidArgument("binary_conv: strides/dilations >= 1, pads >= 0, rule 0/1");
  Operands op{in_packed ? nullptr : reinterpret_cast<const float*>(in.untyped_data()),
              in_packed ? reinterpret_cast<const uint32_t*>(in.untyped_data()) : nullptr,
              thr.typed_data(), kernel.typed_data(), scale.typed_data(), shift.typed_data(),
              residual.typed_data(),
              out_packed ? nullptr : reinterpret_cast<float*>(out->untyped_data()),
              out_packed ? reinterpret_cast<uint32_t*>(out->untyped_data()) : nullptr};
  const int64_t rows = g.n * g.ho;
  if (rows == 0 || g.wo == 0 || g.o == 0) return ffi::Error::Success();
  // A part below ~64k popcounts of work is not worth a thread hand-off.
  constexpr int64_t kGrain = 1 << 16;
  const int64_t work_units = rows * g.wo * g.words * ((g.o + kLanes - 1) / kLanes);
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(pool.num_threads()), rows, work_units / kGrain}));
  jaxcompress::RunRanges(pool, rows, parts, [&](int64_t b, int64_t e) { RunRange(g, op, b, e); });
  return ffi::Error::Success();
}

}  // namespace

// Popcount path of this build: 2 AVX-512 VPOPCNTDQ, 1 AVX2 nibble tables, 0 scalar.
extern "C" int JaxcompressBinaryConvPath() { return kPath; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcompressBinaryConv, BinaryConvImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("kernel_h")
                                  .Attr<int64_t>("kernel_w")
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("dilation_h")
                                  .Attr<int64_t>("dilation_w")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("rule")
                                  .Attr<int64_t>("exact_zeros")
                                  .Attr<int64_t>("residual")
                                  .Attr<int64_t>("activation")
                                  .Attr<int64_t>("channels"));
