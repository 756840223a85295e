// AVX2 CPU kernels (compiled with -mavx2 -mfma -mpopcnt; selected at run time only on CPUs that have them).
//
// int8 GEMM: u8/s8 activations are widened to int16 once and multiplied with vpmaddwd (int16 x int16 -> int32
// pairs, exact); vpmaddubsw would be twice as wide but saturates for u8 x s8. From 8 activation rows on, the
// weights are repacked per call into int16 panels so that accumulators hold output columns (see int8_gemm_panels);
// below that, weights are widened on the fly and each output is a dot product along K.
// W1A8: activations shifted to u8 (x + 128). From 8 rows on, the sign bits are expanded per call into panels of
// +1/-1 bytes and multiplied with vpmaddubsw (u8 x s8, 32 products per instruction, exact: no pair sum exceeds
// 510), summed in int16 lanes for 64 steps before widening; below that, sign bits expand to byte masks and the
// masked activations are summed with vpsadbw.
// W1A1: 64-bit xor/and + popcnt (AVX2 has no vector popcount).
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

namespace fq_cpu {
namespace {

constexpr int64_t kL2Bytes = 256 * 1024;  // weight block kept hot while all activation rows pass over it

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline int64_t hsum_epi64(__m256i v) {
  __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
  return _mm_cvtsi128_si64(s);
}

// 4 x 8 int32 -> 32 bytes in order (packs work per 128-bit lane; the permute restores the order).
inline __m256i order32(__m256i packed) {
  return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// ------------------------------------------------------------------------------------------------ quantizers

bool quantize_affine(const float* x, int64_t K, int64_t r0, int64_t r1, const float* xmin, const float* scale,
                     int64_t rs, float levels, uint8_t* out) {
  __m256 nan_seen = _mm256_setzero_ps();
  bool nan = false;
  const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(levels);
  for (int64_t r = r0; r < r1; ++r) {
    const float lo = xmin[r * rs], s = scale[r * rs];
    const __m256 vlo = _mm256_set1_ps(lo), vs = _mm256_set1_ps(s);
    const float* xr = x + r * K;
    uint8_t* o = out + r * K;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      __m256i q[4];
      for (int j = 0; j < 4; ++j) {
        __m256 v = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + k + 8 * j), vlo), vs);
        nan_seen = _mm256_or_ps(nan_seen, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, zero), top));
      }
      const __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), order32(packed));
    }
    for (; k < K; ++k) {
      float v = (xr[k] - lo) / s;
      if (v != v) {
        nan = true;
        v = 0.f;
      }
      v = nearbyintf(v);
      v = v < 0.f ? 0.f : (v > levels ? levels : v);
      o[k] = static_cast<uint8_t>(v);
    }
  }
  return nan || _mm256_movemask_ps(nan_seen) != 0;
}

bool quantize_absmax(const float* x, int64_t K, int64_t r0, int64_t r1, int8_t* out, float* gamma) {
  const __m256 sign = _mm256_set1_ps(-0.f), fmax = _mm256_set1_ps(3.402823466e38f);
  const __m256 q = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
  __m256 bad_seen = _mm256_setzero_ps();
  bool bad = false;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * K;
    int8_t* o = out + r * K;
    __m256 vmax = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(xr + k));
      bad_seen = _mm256_or_ps(bad_seen, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));  // NaN or Inf
      vmax = _mm256_max_ps(vmax, a);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float g = 0.f;
    for (int i = 0; i < 8; ++i) g = lanes[i] > g ? lanes[i] : g;
    for (; k < K; ++k) {
      const float a = fabsf(xr[k]);
      if (!(a <= 3.402823466e38f)) bad = true;
      g = a > g ? a : g;
    }
    gamma[r] = g;
    if (!(g > 0.f)) {
      memset(o, 0, K);
      continue;
    }
    const __m256 vg = _mm256_set1_ps(g);
    for (k = 0; k + 32 <= K; k += 32) {
      __m256i c[4];
      for (int j = 0; j < 4; ++j) {
        __m256 v = _mm256_div_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + k + 8 * j), q), vg);
        v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        c[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), q));
      }
      const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), order32(packed));
    }
    for (; k < K; ++k) {
      float v = nearbyintf((xr[k] * 127.f) / g);
      v = v < -127.f ? -127.f : (v > 127.f ? 127.f : v);
      o[k] = static_cast<int8_t>(v);
    }
  }
  return bad || _mm256_movemask_ps(bad_seen) != 0;
}

bool fake_quantize(const float* x, int64_t C, int64_t r0, int64_t r1, const float* lo, const float* scale,
                   int64_t cs, float levels, float* out) {
  __m256 nan_seen = _mm256_setzero_ps();
  bool nan = false;
  const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(levels);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * C;
    float* o = out + r * C;
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      const __m256 vl = cs ? _mm256_loadu_ps(lo + c) : _mm256_set1_ps(lo[0]);
      const __m256 vs = cs ? _mm256_loadu_ps(scale + c) : _mm256_set1_ps(scale[0]);
      const __m256 v = _mm256_loadu_ps(xr + c);
      nan_seen = _mm256_or_ps(nan_seen, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      __m256 q = _mm256_div_ps(_mm256_sub_ps(v, vl), vs);
      q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm256_min_ps(_mm256_max_ps(q, zero), top);
      _mm256_storeu_ps(o + c, _mm256_fmadd_ps(q, vs, vl));
    }
    for (; c < C; ++c) {
      const float v = xr[c];
      if (v != v) nan = true;
      o[c] = fake_quantize_value(v, lo[c * cs], scale[c * cs], levels);
    }
  }
  return nan || _mm256_movemask_ps(nan_seen) != 0;
}

// ------------------------------------------------------------------------------------------------ int8 GEMM

int64_t int8_prep_stride(int64_t K) { return round_up(K, 16) * 2; }

void int8_prep(const void* x, bool x_signed, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* rx) {
  const int64_t kp = round_up(K, 16);
  for (int64_t r = r0; r < r1; ++r) {
    int16_t* dst = reinterpret_cast<int16_t*>(buf + r * kp * 2);
    int32_t sum = 0;
    if (x_signed) {
      const int8_t* src = static_cast<const int8_t*>(x) + r * K;
      for (int64_t k = 0; k < K; ++k) sum += dst[k] = src[k];
    } else {
      const uint8_t* src = static_cast<const uint8_t*>(x) + r * K;
      for (int64_t k = 0; k < K; ++k) sum += dst[k] = src[k];
    }
    for (int64_t k = K; k < kp; ++k) dst[k] = 0;  // zero padding: the tail step reads a full vector
    rx[r] = sum;
  }
}

// MR activation rows x NR weight rows, full depth K. x rows are int16 with stride xs (a multiple of 16, zero
// padded); w rows are int8 with stride K.
template <int MR, int NR>
void int8_tile(const int16_t* x, int64_t xs, const int8_t* w, int64_t K, int32_t* res) {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  const int64_t k16 = K & ~int64_t(15);
  const int64_t ahead = int8_prefetch_distance(NR * K);
  for (int64_t k = 0; k < k16; k += 16) {
    __m256i wv[NR];
    for (int j = 0; j < NR; ++j) {
      // A cache line at a time: few activation rows make this loop stream the weights from memory.
      if ((k & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(w + j * K + k + ahead), _MM_HINT_T0);
      wv[j] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + j * K + k)));
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i * xs + k));
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv, wv[j]));
    }
  }
  if (k16 < K) {  // weight tail through a zero-padded copy (reading past the row could leave the tensor)
    alignas(16) int8_t tail[NR][16];
    memset(tail, 0, sizeof(tail));
    for (int j = 0; j < NR; ++j) memcpy(tail[j], w + j * K + k16, K - k16);
    __m256i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(tail[j])));
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i * xs + k16));
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv, wv[j]));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) res[i * NR + j] = hsum_epi32(acc[i][j]);
}

using Int8Tile = void (*)(const int16_t*, int64_t, const int8_t*, int64_t, int32_t*);
constexpr int kInt8MR = 4, kInt8NR = 2;  // 8 accumulators + 2 weight vectors + temporaries fit the 16 ymm registers
const Int8Tile kInt8Tiles[kInt8MR][kInt8NR] = {
    {int8_tile<1, 1>, int8_tile<1, 2>},
    {int8_tile<2, 1>, int8_tile<2, 2>},
    {int8_tile<3, 1>, int8_tile<3, 2>},
    {int8_tile<4, 1>, int8_tile<4, 2>},
};

// Few activation rows (decoding with a small beam): dot products along K, no weight repacking.
void int8_gemm_rows(const int16_t* x, int64_t xs, int64_t M, int64_t K, const int8_t* w, int64_t n0, int64_t n1,
                    const Int8Epilogue& ep, float* out, int64_t ldo) {
  int64_t nblk = kL2Bytes / (K > 0 ? K : 1) / kInt8NR * kInt8NR;
  nblk = nblk < kInt8NR ? kInt8NR : nblk;
  int32_t res[kInt8MR * kInt8NR];
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t m = 0; m < M; m += kInt8MR) {
      const int mr = static_cast<int>(min64(kInt8MR, M - m));
      for (int64_t n = nb; n < ne; n += kInt8NR) {
        const int nr = static_cast<int>(min64(kInt8NR, ne - n));
        kInt8Tiles[mr - 1][nr - 1](x + m * xs, xs, w + n * K, K, res);
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < nr; ++j) out[(m + i) * ldo + n + j] = int8_epilogue(ep, m + i, n + j, res[i * nr + j]);
      }
    }
  }
}

// Many activation rows: the weights of a block of columns are repacked once per call into panels of 16 columns,
// [k pair][16 columns][2] int16, so that one vpmaddwd of a broadcast activation pair (x[k], x[k+1]) yields the
// partial sums of 8 output columns in the lanes of one accumulator: no horizontal sums, a vector epilogue.
constexpr int kPanel = 16;
constexpr int kPanelMR = 6;  // 6 x 2 accumulators + 2 weight vectors + 1 broadcast = 15 ymm registers

// 8 x 8 transpose of 32-bit elements (row r of the result = element r of every input row).
inline void transpose8x8_epi32(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      u[4 * i + j] = _mm256_unpacklo_epi64(t[4 * i + j], t[4 * i + j + 2]);
      u[4 * i + j + 2] = _mm256_unpackhi_epi64(t[4 * i + j], t[4 * i + j + 2]);
    }
  // u[0..3]: rows 0-3 of 128-bit lane halves, u[4..7]: rows 4-7; order within: (lo pairs of 0,1), (hi of 0,1) ...
  const int order[4] = {0, 2, 1, 3};
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[order[i]], u[4 + order[i]], 0x20);
    r[i + 4] = _mm256_permute2x128_si256(u[order[i]], u[4 + order[i]], 0x31);
  }
}

// Columns [n, n + cols) (cols <= 16, missing columns are zero) of w [*, K] into one panel of xs / 2 k pairs.
void pack_panel(const int8_t* w, int64_t K, int64_t xs, int64_t cols, int16_t* panel) {
  alignas(32) int8_t rows[kPanel][16];
  for (int64_t k = 0; k < xs; k += 16) {
    const int64_t kk = min64(16, K - k);
    for (int c = 0; c < kPanel; ++c) {
      if (c < cols && kk == 16) {
        memcpy(rows[c], w + c * K + k, 16);
      } else {
        memset(rows[c], 0, 16);
        if (c < cols && kk > 0) memcpy(rows[c], w + c * K + k, kk);
      }
    }
    for (int half = 0; half < 2; ++half) {  // columns 0-7, then 8-15
      __m256i r[8];
      for (int c = 0; c < 8; ++c)
        r[c] = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(rows[8 * half + c])));
      transpose8x8_epi32(r);  // r[p] = pair p of the 8 columns
      for (int p = 0; p < 8; ++p)
        _mm256_store_si256(reinterpret_cast<__m256i*>(panel + ((k / 2 + p) * kPanel + 8 * half) * 2), r[p]);
    }
  }
}

template <int MR>
void panel_tile(const int16_t* x, int64_t xs, const int16_t* panel, int64_t n, int64_t cols, int64_t m,
                const Int8Epilogue& ep, float* out, int64_t ldo) {
  // The accumulators are indexed by compile-time constants only, so that they live in registers: a dynamic index
  // (as the epilogue's) makes the compiler keep them on the stack, one store-to-load round trip per k pair.
  __m256i acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm256_setzero_si256();
  const int32_t* xp = reinterpret_cast<const int32_t*>(x);
  const int64_t pairs = xs / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + p * 2 * kPanel));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + p * 2 * kPanel + kPanel));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256i b = _mm256_set1_epi32(xp[i * pairs + p]);
      acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(b, w0));
      acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(b, w1));
    }
  }
  alignas(32) int32_t sums[MR][2][8];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums[i][0]), acc0[i]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums[i][1]), acc1[i]);
  }
  for (int h = 0; h < 2; ++h) {
    const int64_t c0 = n + 8 * h, valid = min64(8, cols - 8 * h);
    if (valid <= 0) break;
    alignas(32) float sw[8] = {}, zw[8] = {}, ws[8] = {}, bias[8] = {};
    for (int j = 0; j < valid; ++j) {
      sw[j] = ep.sw[c0 + j];
      zw[j] = ep.zw[c0 + j];
      ws[j] = static_cast<float>(ep.ws[c0 + j]);
      bias[j] = ep.bias ? ep.bias[c0 + j] : 0.f;
    }
    const __m256 vsw = _mm256_load_ps(sw), vzw = _mm256_load_ps(zw);
    const __m256 vws = _mm256_load_ps(ws), vb = _mm256_load_ps(bias);
    for (int i = 0; i < MR; ++i) {
      const int64_t r = m + i;
      const float sx = ep.sx[r * ep.sx_stride], zx = ep.zx[r * ep.zx_stride];
      const __m256 vsx = _mm256_set1_ps(sx), vzx = _mm256_set1_ps(zx);
      const __m256i acc = _mm256_load_si256(reinterpret_cast<const __m256i*>(sums[i][h]));
      __m256 y = _mm256_mul_ps(_mm256_mul_ps(vsx, vsw), _mm256_cvtepi32_ps(acc));
      y = _mm256_add_ps(y, _mm256_mul_ps(_mm256_mul_ps(vsx, vzw), _mm256_set1_ps(static_cast<float>(ep.rx[r]))));
      y = _mm256_add_ps(y, _mm256_mul_ps(_mm256_mul_ps(vzx, vsw), vws));
      y = _mm256_add_ps(y, _mm256_mul_ps(_mm256_set1_ps(ep.k * zx), vzw));
      if (ep.bias) y = _mm256_add_ps(y, vb);
      float* o = out + r * ldo + c0;
      if (valid == 8) {
        _mm256_storeu_ps(o, y);
      } else {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, y);
        memcpy(o, tmp, valid * sizeof(float));
      }
    }
  }
}

using PanelTile = void (*)(const int16_t*, int64_t, const int16_t*, int64_t, int64_t, int64_t, const Int8Epilogue&,
                           float*, int64_t);
const PanelTile kPanelTiles[kPanelMR] = {panel_tile<1>, panel_tile<2>, panel_tile<3>,
                                         panel_tile<4>, panel_tile<5>, panel_tile<6>};

void int8_gemm_panels(const int16_t* x, int64_t xs, int64_t M, int64_t K, const int8_t* w, int64_t n0, int64_t n1,
                      const Int8Epilogue& ep, float* out, int64_t ldo) {
  const int64_t panel_elems = xs * kPanel;  // int16 per panel
  int64_t nblk = kL2Bytes / (panel_elems * 2) * kPanel;
  nblk = nblk < kPanel ? kPanel : nblk;
  const int64_t count = min64(nblk, round_up(n1 - n0, kPanel)) / kPanel;  // panels held at once
  int16_t* panels = static_cast<int16_t*>(aligned_alloc(32, count * panel_elems * 2));  // a multiple of 32 bytes
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t n = nb; n < ne; n += kPanel)
      pack_panel(w + n * K, K, xs, min64(kPanel, ne - n), panels + (n - nb) / kPanel * panel_elems);
    for (int64_t m = 0; m < M; m += kPanelMR) {
      const int mr = static_cast<int>(min64(kPanelMR, M - m));
      for (int64_t n = nb; n < ne; n += kPanel)
        kPanelTiles[mr - 1](x + m * xs, xs, panels + (n - nb) / kPanel * panel_elems, n, min64(kPanel, ne - n), m, ep,
                            out, ldo);
    }
  }
  free(panels);
}

constexpr int64_t kPanelMinRows = 8;  // below this, repacking the weights costs more than it saves

void int8_gemm(const uint8_t* xbuf, bool, int64_t M, int64_t K, const int8_t* w, int64_t n0, int64_t n1,
               const Int8Epilogue& ep, float* out, int64_t ldo) {
  const int16_t* x = reinterpret_cast<const int16_t*>(xbuf);
  const int64_t xs = round_up(K, 16);
  if (M < kPanelMinRows)
    int8_gemm_rows(x, xs, M, K, w, n0, n1, ep, out, ldo);
  else
    int8_gemm_panels(x, xs, M, K, w, n0, n1, ep, out, ldo);
}

// ------------------------------------------------------------------------------------------------ W1A8

// Activations as u8 = x + 128 (x ^ 0x80), rows of 32 * ceil(K/32) bytes, zero padded.
int64_t w1a8_prep_stride(int64_t K) { return round_up(K, 32); }

void w1a8_prep(const int8_t* x, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* xsum) {
  const int64_t kp = round_up(K, 32);
  for (int64_t r = r0; r < r1; ++r) {
    uint8_t* dst = buf + r * kp;
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      sum += x[r * K + k];
      dst[k] = static_cast<uint8_t>(x[r * K + k]) ^ 0x80u;
    }
    for (int64_t k = K; k < kp; ++k) dst[k] = 0;
    xsum[r] = sum;
  }
}

// 32 bits -> 32 bytes, 0xFF where the bit is set: byte i <- byte i/8 of b, then keep bit i%8.
inline __m256i bit_mask(uint32_t b) {
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bitsel = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(b)), shuf);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bitsel), bitsel);
}

// plus' = sum of (x + 128) where the sign bit is 1; plus = plus' - 128 * popcount(w); dot = 2 * plus - sum(x).
template <int MR, int NR>
void w1a8_tile(const uint8_t* x, int64_t xs, const uint32_t* w, int64_t KW, int32_t* plus) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = zero;
  int32_t pc[NR] = {};
  for (int64_t c = 0; c < KW; ++c) {
    __m256i mask[NR];
    for (int j = 0; j < NR; ++j) {
      const uint32_t b = w[j * KW + c];
      pc[j] += _mm_popcnt_u32(b);
      mask[j] = bit_mask(b);  // 0xFF where the weight of column 32c+i is +1
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i * xs + 32 * c));
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm256_add_epi64(acc[i][j], _mm256_sad_epu8(_mm256_and_si256(mask[j], xv), zero));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) plus[i * NR + j] = static_cast<int32_t>(hsum_epi64(acc[i][j])) - 128 * pc[j];
}

using W1A8Tile = void (*)(const uint8_t*, int64_t, const uint32_t*, int64_t, int32_t*);
constexpr int kW1A8MR = 4, kW1A8NR = 2;
const W1A8Tile kW1A8Tiles[kW1A8MR][kW1A8NR] = {
    {w1a8_tile<1, 1>, w1a8_tile<1, 2>},
    {w1a8_tile<2, 1>, w1a8_tile<2, 2>},
    {w1a8_tile<3, 1>, w1a8_tile<3, 2>},
    {w1a8_tile<4, 1>, w1a8_tile<4, 2>},
};

// Few activation rows: dot products along K on byte masks of the sign bits.
void w1a8_gemm_rows(const uint8_t* xbuf, const int32_t* xsum, int64_t M, int64_t K, const int32_t* wbits,
                    const int32_t* wbits2, int64_t n0, int64_t n1, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  const int64_t KW = (K + 31) / 32, xs = KW * 32, planes = wbits2 ? 2 : 1;
  const uint32_t* w = reinterpret_cast<const uint32_t*>(wbits);
  const uint32_t* w2 = reinterpret_cast<const uint32_t*>(wbits2);
  int64_t nblk = kL2Bytes / (KW > 0 ? KW * 4 * planes : 1) / kW1A8NR * kW1A8NR;
  nblk = nblk < kW1A8NR ? kW1A8NR : nblk;
  int32_t plus[kW1A8MR * kW1A8NR], plus2[kW1A8MR * kW1A8NR] = {};
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t m = 0; m < M; m += kW1A8MR) {
      const int mr = static_cast<int>(min64(kW1A8MR, M - m));
      for (int64_t n = nb; n < ne; n += kW1A8NR) {
        const int nr = static_cast<int>(min64(kW1A8NR, ne - n));
        kW1A8Tiles[mr - 1][nr - 1](xbuf + m * xs, xs, w + n * KW, KW, plus);
        if (w2) kW1A8Tiles[mr - 1][nr - 1](xbuf + m * xs, xs, w2 + n * KW, KW, plus2);
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < nr; ++j) {
            // dot = sum over the planes of 2 * plus - sum(x)
            const int32_t dot = 2 * (plus[i * nr + j] + plus2[i * nr + j]) - static_cast<int32_t>(planes) * xsum[m + i];
            out[(m + i) * ldo + n + j] = scale_epilogue(ep, m + i, n + j, dot);
          }
      }
    }
  }
}

// Many activation rows: panels [k quad][16 columns][4] of +1/-1 bytes (0 for missing columns). A broadcast quad of
// activations times one panel vector gives, per column, two int16 sums of two products; 64 quads stay below 2^15
// (64 * 2 * 255 = 32640), then vpmaddwd with ones widens them to one int32 per column. Two planes (ternary) go
// into one panel of t = (s1 + s2) / 2 in {-1, 0, 1} bytes, so they cost what one plane costs: dot = 2 * t . x.
constexpr int kBinPanel = 16;
constexpr int kBinPanelMR = 4;  // 4 x 2 int16 + 4 x 2 int32 accumulators + 2 weight vectors + 1 broadcast
constexpr int64_t kBinQuadsPerChunk = 64;

// 32 sign bits -> 32 bytes of +1 / -1.
inline __m256i expand_signs(uint32_t b) {
  return _mm256_sub_epi8(_mm256_and_si256(bit_mask(b), _mm256_set1_epi8(2)), _mm256_set1_epi8(1));
}

// Two planes of 32 sign bits -> 32 bytes of (s1 + s2) / 2 = bit1 + bit2 - 1.
inline __m256i expand_ternary(uint32_t b1, uint32_t b2) {
  const __m256i one = _mm256_set1_epi8(1);
  return _mm256_sub_epi8(_mm256_add_epi8(_mm256_and_si256(bit_mask(b1), one), _mm256_and_si256(bit_mask(b2), one)),
                         one);
}

// Columns [0, cols) (cols <= 16) of the sign words w [*, KW] (and of the second plane w2, if not null) into one panel
// of 8 * KW quads; colsum[c] = the sum of column c's panel bytes over k < K (padding bits are 0; the padded
// activations are 0, so padded bytes add nothing).
void pack_binary_panel(const uint32_t* w, const uint32_t* w2, int64_t KW, int64_t K, int64_t cols, int8_t* panel,
                       int32_t* colsum) {
  for (int64_t c = 0; c < cols; ++c) {
    int32_t pop = 0;
    for (int64_t j = 0; j < KW; ++j) pop += _mm_popcnt_u32(w[c * KW + j]) + (w2 ? _mm_popcnt_u32(w2[c * KW + j]) : 0);
    colsum[c] = w2 ? pop - static_cast<int32_t>(K) : 2 * pop - static_cast<int32_t>(K);
  }
  for (int64_t c0 = 0; c0 < kBinPanel; c0 += 8)
    for (int64_t j = 0; j < KW; ++j) {
      __m256i r[8];
      for (int c = 0; c < 8; ++c) {
        const int64_t i = (c0 + c) * KW + j;
        r[c] = c0 + c >= cols ? _mm256_setzero_si256() : w2 ? expand_ternary(w[i], w2[i]) : expand_signs(w[i]);
      }
      transpose8x8_epi32(r);  // r[t] = quad t of word j for the 8 columns
      for (int t = 0; t < 8; ++t)
        _mm256_store_si256(reinterpret_cast<__m256i*>(panel + ((8 * j + t) * kBinPanel + c0) * 4), r[t]);
    }
}

template <int MR>
void w1a8_panel_tile(const uint8_t* x, int64_t xs, const int8_t* panel, int64_t quads, int32_t* dot) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i tot0[MR], tot1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) tot0[i] = tot1[i] = _mm256_setzero_si256();
  for (int64_t q0 = 0; q0 < quads; q0 += kBinQuadsPerChunk) {
    __m256i acc0[MR], acc1[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm256_setzero_si256();
    const int64_t qe = min64(q0 + kBinQuadsPerChunk, quads);
    for (int64_t q = q0; q < qe; ++q) {
      const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + q * kBinPanel * 4));
      const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + q * kBinPanel * 4 + 32));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        int32_t quad;
        memcpy(&quad, x + i * xs + 4 * q, 4);
        const __m256i b = _mm256_set1_epi32(quad);
        acc0[i] = _mm256_add_epi16(acc0[i], _mm256_maddubs_epi16(b, w0));
        acc1[i] = _mm256_add_epi16(acc1[i], _mm256_maddubs_epi16(b, w1));
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      tot0[i] = _mm256_add_epi32(tot0[i], _mm256_madd_epi16(acc0[i], ones));
      tot1[i] = _mm256_add_epi32(tot1[i], _mm256_madd_epi16(acc1[i], ones));
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(dot + i * kBinPanel), tot0[i]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(dot + i * kBinPanel + 8), tot1[i]);
  }
}

using BinPanelTile = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int32_t*);
const BinPanelTile kBinPanelTiles[kBinPanelMR] = {w1a8_panel_tile<1>, w1a8_panel_tile<2>, w1a8_panel_tile<3>,
                                                  w1a8_panel_tile<4>};

void w1a8_gemm_panels(const uint8_t* xbuf, int64_t M, int64_t K, const int32_t* wbits, const int32_t* wbits2,
                      int64_t n0, int64_t n1, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  const int64_t KW = (K + 31) / 32, xs = KW * 32, quads = KW * 8;
  const int32_t planes = wbits2 ? 2 : 1;
  const uint32_t* w = reinterpret_cast<const uint32_t*>(wbits);
  const uint32_t* w2 = reinterpret_cast<const uint32_t*>(wbits2);
  const int64_t panel_bytes = quads * kBinPanel * 4;
  int64_t nblk = kL2Bytes / panel_bytes * kBinPanel;
  nblk = nblk < kBinPanel ? kBinPanel : nblk;
  const int64_t count = min64(nblk, round_up(n1 - n0, kBinPanel)) / kBinPanel;  // panels held at once
  int8_t* panels = static_cast<int8_t*>(aligned_alloc(32, count * panel_bytes));  // a multiple of 32 bytes
  int32_t* colsum = static_cast<int32_t*>(malloc(count * kBinPanel * sizeof(int32_t)));
  alignas(32) int32_t dot[kBinPanelMR * kBinPanel];
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t n = nb; n < ne; n += kBinPanel)
      pack_binary_panel(w + n * KW, w2 ? w2 + n * KW : nullptr, KW, K, min64(kBinPanel, ne - n),
                        panels + (n - nb) / kBinPanel * panel_bytes, colsum + (n - nb));
    for (int64_t m = 0; m < M; m += kBinPanelMR) {
      const int mr = static_cast<int>(min64(kBinPanelMR, M - m));
      for (int64_t n = nb; n < ne; n += kBinPanel) {
        kBinPanelTiles[mr - 1](xbuf + m * xs, xs, panels + (n - nb) / kBinPanel * panel_bytes, quads, dot);
        const int64_t cols = min64(kBinPanel, ne - n);
        // sum((x + 128) * v) - 128 * sum(v) = sum(x * v); two planes: s1 + s2 = 2 v
        for (int i = 0; i < mr; ++i)
          for (int64_t j = 0; j < cols; ++j)
            out[(m + i) * ldo + n + j] =
                scale_epilogue(ep, m + i, n + j, planes * (dot[i * kBinPanel + j] - 128 * colsum[n - nb + j]));
      }
    }
  }
  free(panels);
  free(colsum);
}

void w1a8_gemm(const uint8_t* xbuf, const int32_t* xsum, int64_t M, int64_t K, const int32_t* wbits,
               const int32_t* wbits2, int64_t n0, int64_t n1, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  if (M < kPanelMinRows)
    w1a8_gemm_rows(xbuf, xsum, M, K, wbits, wbits2, n0, n1, ep, out, ldo);
  else
    w1a8_gemm_panels(xbuf, M, K, wbits, wbits2, n0, n1, ep, out, ldo);
}

// ------------------------------------------------------------------------------------------------ W1A1

inline uint64_t load64(const uint32_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

template <int MR, int NR, bool AND>
void w1a1_tile(const uint32_t* x, const uint32_t* w, int64_t KW, int32_t* pop) {
  uint64_t acc[MR][NR] = {};
  int64_t c = 0;
  for (; c + 2 <= KW; c += 2) {
    uint64_t wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load64(w + j * KW + c);
    for (int i = 0; i < MR; ++i) {
      const uint64_t xv = load64(x + i * KW + c);
      for (int j = 0; j < NR; ++j) acc[i][j] += _mm_popcnt_u64(AND ? (xv & wv[j]) : (xv ^ wv[j]));
    }
  }
  if (c < KW) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        const uint32_t a = x[i * KW + c], b = w[j * KW + c];
        acc[i][j] += _mm_popcnt_u32(AND ? (a & b) : (a ^ b));
      }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) pop[i * NR + j] = static_cast<int32_t>(acc[i][j]);
}

using W1A1Tile = void (*)(const uint32_t*, const uint32_t*, int64_t, int32_t*);
constexpr int kW1A1MR = 4, kW1A1NR = 2;
template <bool AND>
struct W1A1Tiles {
  static constexpr W1A1Tile t[kW1A1MR][kW1A1NR] = {
      {w1a1_tile<1, 1, AND>, w1a1_tile<1, 2, AND>},
      {w1a1_tile<2, 1, AND>, w1a1_tile<2, 2, AND>},
      {w1a1_tile<3, 1, AND>, w1a1_tile<3, 2, AND>},
      {w1a1_tile<4, 1, AND>, w1a1_tile<4, 2, AND>},
  };
};

void w1a1_gemm(const int32_t* xbits, int64_t M, int64_t KW, int64_t K, const int32_t* wbits, int64_t n0, int64_t n1,
               bool unsigned_act, const int32_t* xpop, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  const uint32_t* x = reinterpret_cast<const uint32_t*>(xbits);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(wbits);
  int64_t nblk = kL2Bytes / (KW > 0 ? KW * 4 : 1) / kW1A1NR * kW1A1NR;
  nblk = nblk < kW1A1NR ? kW1A1NR : nblk;
  int32_t pop[kW1A1MR * kW1A1NR];
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t m = 0; m < M; m += kW1A1MR) {
      const int mr = static_cast<int>(min64(kW1A1MR, M - m));
      for (int64_t n = nb; n < ne; n += kW1A1NR) {
        const int nr = static_cast<int>(min64(kW1A1NR, ne - n));
        const W1A1Tile tile = unsigned_act ? W1A1Tiles<true>::t[mr - 1][nr - 1] : W1A1Tiles<false>::t[mr - 1][nr - 1];
        tile(x + m * KW, w + n * KW, KW, pop);
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < nr; ++j) {
            const int32_t p = pop[i * nr + j];
            const int32_t dot = unsigned_act ? 2 * p - xpop[m + i] : static_cast<int32_t>(K) - 2 * p;
            out[(m + i) * ldo + n + j] = scale_epilogue(ep, m + i, n + j, dot);
          }
      }
    }
  }
}

const Kernels kTable = {"avx2", quantize_affine, quantize_absmax, fake_quantize, int8_prep_stride, int8_prep,
                        int8_gemm, w1a8_prep_stride, w1a8_prep, w1a8_gemm, w1a1_gemm, int8_epilogue_rows_scalar,
                        expand_signs_scalar, attention_scores_scalar,
                        attention_values_scalar};

}  // namespace

const Kernels& avx2_kernels() { return kTable; }

}  // namespace fq_cpu
