// AVX-512 CPU kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512vpopcntdq; selected at
// run time only on CPUs that have all of them).
//
// int8 GEMM: vpdpbusd (u8 x s8 -> int32, four products per lane, no saturation). Signed activations are
// shifted to u8 (x ^ 0x80 = x + 128) and the shift is removed with the weight row sums (the op's w_sum). W1A8:
// the sign bits are the byte mask of a masked move; vpsadbw sums the kept (shifted) activations. W1A1: vpopcntq on
// 512-bit xor/and. Tails use masked loads, which never fault.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

namespace fq_cpu {
namespace {

constexpr int64_t kL2Bytes = 512 * 1024;

// The mask of the first n of 16 lanes (all for n >= 16, none for n <= 0).
inline __mmask16 lanes_left(int64_t n) { return n >= 16 ? 0xFFFF : n > 0 ? static_cast<__mmask16>((1u << n) - 1) : 0; }

// ------------------------------------------------------------------------------------------------ quantizers

bool quantize_affine(const float* x, int64_t K, int64_t r0, int64_t r1, const float* xmin, const float* scale,
                     int64_t rs, float levels, uint8_t* out) {
  __mmask16 nan_seen = 0;
  const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(levels);
  for (int64_t r = r0; r < r1; ++r) {
    const __m512 vlo = _mm512_set1_ps(xmin[r * rs]), vs = _mm512_set1_ps(scale[r * rs]);
    const float* xr = x + r * K;
    uint8_t* o = out + r * K;
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 km = lanes_left(K - k);
      __m512 v = _mm512_div_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(km, xr + k), vlo), vs);
      nan_seen |= _mm512_mask_cmp_ps_mask(km, v, v, _CMP_UNORD_Q);
      v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, zero), top));
      _mm512_mask_cvtusepi32_storeu_epi8(o + k, km, q);
    }
  }
  return nan_seen != 0;
}

bool quantize_absmax(const float* x, int64_t K, int64_t r0, int64_t r1, int8_t* out, float* gamma) {
  const __m512 fmax = _mm512_set1_ps(3.402823466e38f), q = _mm512_set1_ps(127.f), lo = _mm512_set1_ps(-127.f);
  __mmask16 bad_seen = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * K;
    int8_t* o = out + r * K;
    __m512 vmax = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 km = lanes_left(K - k);
      const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(km, xr + k));
      bad_seen |= _mm512_mask_cmp_ps_mask(km, a, fmax, _CMP_NLE_UQ);  // NaN or Inf
      vmax = _mm512_max_ps(vmax, a);
    }
    const float g = _mm512_reduce_max_ps(vmax);
    gamma[r] = g;
    if (!(g > 0.f)) {
      memset(o, 0, K);
      continue;
    }
    const __m512 vg = _mm512_set1_ps(g);
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 km = lanes_left(K - k);
      __m512 v = _mm512_div_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(km, xr + k), q), vg);
      v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm512_mask_cvtsepi32_storeu_epi8(o + k, km, _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), q)));
    }
  }
  return bad_seen != 0;
}

// ------------------------------------------------------------------------------------------------ int8 GEMM

// Activations as u8 rows of round_up(K, 64) bytes, zero padded; signed codes are stored as x ^ 0x80.
int64_t int8_prep_stride(int64_t K) { return round_up(K, 64); }

void int8_prep(const void* x, bool x_signed, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* rx) {
  const int64_t kp = round_up(K, 64);
  for (int64_t r = r0; r < r1; ++r) {
    uint8_t* dst = buf + r * kp;
    int32_t sum = 0;
    if (x_signed) {
      const int8_t* src = static_cast<const int8_t*>(x) + r * K;
      for (int64_t k = 0; k < K; ++k) {
        sum += src[k];
        dst[k] = static_cast<uint8_t>(src[k]) ^ 0x80u;
      }
    } else {
      const uint8_t* src = static_cast<const uint8_t*>(x) + r * K;
      for (int64_t k = 0; k < K; ++k) sum += dst[k] = src[k];
    }
    for (int64_t k = K; k < kp; ++k) dst[k] = 0;
    rx[r] = sum;
  }
}

// Few activation rows (decoding with a small beam): dot products along K of up to 4 rows and 4 weight rows, no weight
// repacking. The 16 accumulators are summed into one vector (lane 4i + j: row i, column j) and the epilogue runs on
// it: horizontal sums one by one and a scalar epilogue took as many instructions as the products at K = 512.
constexpr int kRowsMR = 4, kRowsNR = 4;

// Lane t of the result: the sum of the lanes of a[t].
inline __m512i sum_each16(const __m512i (&a)[16]) {
  __m512i b[8], c[4];
  for (int p = 0; p < 8; ++p)  // per 128-bit lane: two partial sums of a[2p], two of a[2p + 1]
    b[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * p], a[2 * p + 1]), _mm512_unpackhi_epi32(a[2 * p], a[2 * p + 1]));
  for (int q = 0; q < 4; ++q)  // per 128-bit lane: the lane's sums of a[4q] ... a[4q + 3]
    c[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(b[2 * q], b[2 * q + 1]), _mm512_unpackhi_epi64(b[2 * q], b[2 * q + 1]));
  // Sum the four 128-bit lanes of each c[q] into 128-bit lane q of the result.
  const __m512i c01 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], 0x88), _mm512_shuffle_i32x4(c[0], c[1], 0xDD));
  const __m512i c23 = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2], c[3], 0x88), _mm512_shuffle_i32x4(c[2], c[3], 0xDD));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(c01, c23, 0x88), _mm512_shuffle_i32x4(c01, c23, 0xDD));
}

// The activation row of lane 4i + j of a tile of mr rows from row m: m + i (rows past the tile repeat row m).
inline int64_t lane_row(int64_t m, int mr, int lane) { return m + (lane / 4 < mr ? lane / 4 : 0); }

// The row operands of the int8 epilogue for rows m + i in lanes 4i + j.
struct Rows4 {
  __m512 sx, zx, rx, kzx;
  Rows4(const Int8Epilogue& ep, int64_t m, int mr) {
    alignas(64) float sxv[16], zxv[16], rxv[16], kzxv[16];
    for (int lane = 0; lane < 16; ++lane) {
      const int64_t r = lane_row(m, mr, lane);
      sxv[lane] = ep.sx[r * ep.sx_stride];
      zxv[lane] = ep.zx[r * ep.zx_stride];
      rxv[lane] = static_cast<float>(ep.rx[r]);
      kzxv[lane] = ep.k * zxv[lane];
    }
    sx = _mm512_load_ps(sxv), zx = _mm512_load_ps(zxv), rx = _mm512_load_ps(rxv), kzx = _mm512_load_ps(kzxv);
  }
};

// Lanes 4i + j (j in cm) of y to out[i * ldo + j], for i < rows.
inline void store_rows4(__m512 y, int rows, __mmask8 cm, float* out, int64_t ldo) {
  alignas(64) float tile[16];
  _mm512_store_ps(tile, y);
  for (int i = 0; i < rows; ++i) _mm_mask_storeu_ps(out + i * ldo, cm, _mm_load_ps(tile + 4 * i));
}

// out[m + i, n + j] for i < MR, j < NR; the epilogue of epilogue16 (below) in the 4 x 4 lane layout.
template <int MR, int NR>
void int8_rows_tile(const uint8_t* x, int64_t xs, const int8_t* w, int64_t K, bool x_signed, const Rows4& rows,
                    const Int8Epilogue& ep, int64_t m, int64_t n, float* out, int64_t ldo) {
  __m512i acc[16];
  for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_si512();
  const int64_t ahead = int8_prefetch_distance(NR * K);
  for (int64_t k = 0; k < K; k += 64) {
    const __mmask64 km = K - k >= 64 ? ~__mmask64(0) : __mmask64((uint64_t(1) << (K - k)) - 1);
    __m512i xv[MR];
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_si512(x + i * xs + k);  // padded rows: always in bounds
    for (int j = 0; j < NR; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(w + j * K + k + ahead), _MM_HINT_T0);
      const __m512i wv = _mm512_maskz_loadu_epi8(km, w + j * K + k);
      for (int i = 0; i < MR; ++i) acc[4 * i + j] = _mm512_dpbusd_epi32(acc[4 * i + j], xv[i], wv);
    }
  }
  const __mmask8 cm = static_cast<__mmask8>((1u << NR) - 1);
  const __m512 sw = _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, ep.sw + n));
  const __m512 zw = _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, ep.zw + n));
  const __m512i wsum = _mm512_broadcast_i32x4(_mm_maskz_loadu_epi32(cm, ep.ws + n));
  __m512i dot = sum_each16(acc);
  // Signed activations were stored as x + 128: remove 128 * (weight row sum), exactly.
  if (x_signed) dot = _mm512_sub_epi32(dot, _mm512_slli_epi32(wsum, 7));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(rows.sx, sw), _mm512_cvtepi32_ps(dot));
  y = _mm512_add_ps(y, _mm512_mul_ps(_mm512_mul_ps(rows.sx, zw), rows.rx));
  y = _mm512_add_ps(y, _mm512_mul_ps(_mm512_mul_ps(rows.zx, sw), _mm512_cvtepi32_ps(wsum)));
  y = _mm512_add_ps(y, _mm512_mul_ps(rows.kzx, zw));
  if (ep.bias) y = _mm512_add_ps(y, _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, ep.bias + n)));
  store_rows4(y, MR, cm, out + m * ldo + n, ldo);
}

using RowsTile = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, bool, const Rows4&, const Int8Epilogue&,
                          int64_t, int64_t, float*, int64_t);
const RowsTile kRowsTiles[kRowsMR][kRowsNR] = {
    {int8_rows_tile<1, 1>, int8_rows_tile<1, 2>, int8_rows_tile<1, 3>, int8_rows_tile<1, 4>},
    {int8_rows_tile<2, 1>, int8_rows_tile<2, 2>, int8_rows_tile<2, 3>, int8_rows_tile<2, 4>},
    {int8_rows_tile<3, 1>, int8_rows_tile<3, 2>, int8_rows_tile<3, 3>, int8_rows_tile<3, 4>},
    {int8_rows_tile<4, 1>, int8_rows_tile<4, 2>, int8_rows_tile<4, 3>, int8_rows_tile<4, 4>},
};

void int8_gemm_rows(const uint8_t* xbuf, bool x_signed, int64_t M, int64_t K, const int8_t* w, int64_t n0,
                    int64_t n1, const Int8Epilogue& ep, float* out, int64_t ldo) {
  const int64_t xs = round_up(K, 64);
  int64_t nblk = kL2Bytes / (K > 0 ? K : 1) / kRowsNR * kRowsNR;
  nblk = nblk < kRowsNR ? kRowsNR : nblk;
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t m = 0; m < M; m += kRowsMR) {
      const int mr = static_cast<int>(min64(kRowsMR, M - m));
      const Rows4 rows(ep, m, mr);
      for (int64_t n = nb; n < ne; n += kRowsNR) {
        const int nr = static_cast<int>(min64(kRowsNR, ne - n));
        kRowsTiles[mr - 1][nr - 1](xbuf + m * xs, xs, w + n * K, K, x_signed, rows, ep, m, n, out, ldo);
      }
    }
  }
}

// Many activation rows: the weights of a block of columns are repacked once per call into panels of 16 columns,
// [k / 4][16 columns][4] bytes, so that one vpdpbusd of 4 broadcast activation bytes yields the partial sums of 16
// output columns in the lanes of one accumulator: no horizontal sums, a vector epilogue.
constexpr int kPanel = 16;
constexpr int kPanelMR = 8;  // 8 rows x 2 panels = 16 accumulators of the 32 zmm registers

// Columns [0, cols) (cols <= 16; missing columns are zero) of w [*, K] into one panel of xs / 4 groups of 4 bytes.
void pack_panel(const int8_t* w, int64_t K, int64_t xs, int64_t cols, uint8_t* panel) {
  const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(static_cast<int32_t>(K)));
  const __mmask16 cm = lanes_left(cols);
  const int64_t k4 = K & ~int64_t(3);
  for (int64_t k = 0; k < k4; k += 4)  // 4 bytes of each column's row: one gather
    _mm512_store_si512(panel + k * kPanel, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), cm, rows, w + k, 1));
  for (int64_t k = k4; k < xs; k += 4) {  // the tail group and the zero padding up to xs
    alignas(64) uint8_t group[kPanel][4] = {};
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t b = 0; b < 4 && k + b < K; ++b) group[c][b] = static_cast<uint8_t>(w[c * K + k + b]);
    memcpy(panel + k * kPanel, group, sizeof(group));
  }
}

// acc[i][p] lane c = sum over k < xs of x[i][k] (u8) * panel p [k][c] (s8), for MR rows and NP adjacent panels.
template <int MR, int NP>
__attribute__((always_inline)) inline void panel_dots(const uint8_t* x, int64_t xs, const uint8_t* panels,
                                                      int64_t panel_bytes, __m512i (&acc)[MR][NP]) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_setzero_si512();
  for (int64_t k = 0; k < xs; k += 4) {
    __m512i wv[NP];
#pragma GCC unroll 2
    for (int p = 0; p < NP; ++p) wv[p] = _mm512_load_si512(panels + p * panel_bytes + k * kPanel);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512i b = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(x + i * xs + k));
#pragma GCC unroll 2
      for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_dpbusd_epi32(acc[i][p], b, wv[p]);
    }
  }
}

// The weight-side operands of 16 output columns of the int8 epilogue (cpu_kernels.h), masked to cm.
struct Columns16 {
  __m512 sw, zw, ws, bias;
  Columns16(const Int8Epilogue& ep, int64_t c0, __mmask16 cm)
      : sw(_mm512_maskz_loadu_ps(cm, ep.sw + c0)), zw(_mm512_maskz_loadu_ps(cm, ep.zw + c0)),
        ws(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(cm, ep.ws + c0))),
        bias(ep.bias ? _mm512_maskz_loadu_ps(cm, ep.bias + c0) : _mm512_setzero_ps()) {}
};

// 16 outputs of the int8 epilogue of row r.
inline __m512 epilogue16(const Int8Epilogue& ep, int64_t r, const Columns16& c, __m512i dot) {
  const float sx = ep.sx[r * ep.sx_stride], zx = ep.zx[r * ep.zx_stride];
  const __m512 vsx = _mm512_set1_ps(sx), vzx = _mm512_set1_ps(zx);
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(vsx, c.sw), _mm512_cvtepi32_ps(dot));
  y = _mm512_add_ps(y, _mm512_mul_ps(_mm512_mul_ps(vsx, c.zw), _mm512_set1_ps(static_cast<float>(ep.rx[r]))));
  y = _mm512_add_ps(y, _mm512_mul_ps(_mm512_mul_ps(vzx, c.sw), c.ws));
  y = _mm512_add_ps(y, _mm512_mul_ps(_mm512_set1_ps(ep.k * zx), c.zw));
  return ep.bias ? _mm512_add_ps(y, c.bias) : y;
}

template <int MR, int NP>
void panel_tile(const uint8_t* x, int64_t xs, const uint8_t* panels, int64_t panel_bytes, bool x_signed, int64_t n,
                int64_t cols, int64_t m, const Int8Epilogue& ep, float* out, int64_t ldo) {
  __m512i acc[MR][NP];
  panel_dots<MR, NP>(x, xs, panels, panel_bytes, acc);
  for (int p = 0; p < NP; ++p) {
    const int64_t c0 = n + p * kPanel, valid = min64(kPanel, cols - p * kPanel);
    const __mmask16 cm = lanes_left(valid);
    const Columns16 columns(ep, c0, cm);
    // Signed activations were stored as x + 128: remove 128 * (weight row sum), exactly.
    const __m512i shift = x_signed ? _mm512_slli_epi32(_mm512_maskz_loadu_epi32(cm, ep.ws + c0), 7)
                                   : _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
      _mm512_mask_storeu_ps(out + (m + i) * ldo + c0, cm,
                            epilogue16(ep, m + i, columns, _mm512_sub_epi32(acc[i][p], shift)));
  }
}

using PanelTile = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, bool, int64_t, int64_t, int64_t,
                           const Int8Epilogue&, float*, int64_t);
const PanelTile kPanelTiles[2][kPanelMR] = {
    {panel_tile<1, 1>, panel_tile<2, 1>, panel_tile<3, 1>, panel_tile<4, 1>, panel_tile<5, 1>, panel_tile<6, 1>,
     panel_tile<7, 1>, panel_tile<8, 1>},
    {panel_tile<1, 2>, panel_tile<2, 2>, panel_tile<3, 2>, panel_tile<4, 2>, panel_tile<5, 2>, panel_tile<6, 2>,
     panel_tile<7, 2>, panel_tile<8, 2>},
};

void int8_gemm_panels(const uint8_t* x, bool x_signed, int64_t M, int64_t K, const int8_t* w, int64_t n0, int64_t n1,
                      const Int8Epilogue& ep, float* out, int64_t ldo) {
  const int64_t xs = round_up(K, 64), panel_bytes = xs * kPanel;  // a multiple of 64 bytes
  int64_t nblk = kL2Bytes / panel_bytes * kPanel;
  nblk = nblk < 2 * kPanel ? 2 * kPanel : nblk;
  const int64_t count = min64(nblk, round_up(n1 - n0, kPanel)) / kPanel;  // panels held at once
  uint8_t* panels = static_cast<uint8_t*>(aligned_alloc(64, count * panel_bytes));
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t n = nb; n < ne; n += kPanel)
      pack_panel(w + n * K, K, xs, min64(kPanel, ne - n), panels + (n - nb) / kPanel * panel_bytes);
    for (int64_t m = 0; m < M; m += kPanelMR) {
      const int mr = static_cast<int>(min64(kPanelMR, M - m));
      for (int64_t n = nb; n < ne; n += 2 * kPanel) {
        const int64_t cols = min64(2 * kPanel, ne - n);
        kPanelTiles[cols > kPanel][mr - 1](x + m * xs, xs, panels + (n - nb) / kPanel * panel_bytes, panel_bytes,
                                           x_signed, n, cols, m, ep, out, ldo);
      }
    }
  }
  free(panels);
}

void int8_epilogue_rows(int32_t* acc, bool shifted, int64_t N, int64_t r0, int64_t r1, const Int8Epilogue& ep) {
  for (int64_t r = r0; r < r1; ++r) {
    int32_t* row = acc + r * N;
    for (int64_t n = 0; n < N; n += 16) {
      const __mmask16 cm = lanes_left(N - n);
      __m512i dot = _mm512_maskz_loadu_epi32(cm, row + n);
      if (shifted) dot = _mm512_add_epi32(dot, _mm512_slli_epi32(_mm512_maskz_loadu_epi32(cm, ep.ws + n), 7));
      _mm512_mask_storeu_ps(reinterpret_cast<float*>(row + n), cm, epilogue16(ep, r, Columns16(ep, n, cm), dot));
    }
  }
}

constexpr int64_t kPanelMinRows = 16;  // below this, repacking the weights costs more than it saves

void int8_gemm(const uint8_t* xbuf, bool x_signed, int64_t M, int64_t K, const int8_t* w, int64_t n0, int64_t n1,
               const Int8Epilogue& ep, float* out, int64_t ldo) {
  if (M < kPanelMinRows)
    int8_gemm_rows(xbuf, x_signed, M, K, w, n0, n1, ep, out, ldo);
  else
    int8_gemm_panels(xbuf, x_signed, M, K, w, n0, n1, ep, out, ldo);
}

// ------------------------------------------------------------------------------------------------ W1A8

// Activations as u8 = x + 128, rows of 64 * ceil(K/64) bytes (whole 64-bit mask chunks), zero padded.
int64_t w1a8_prep_stride(int64_t K) { return round_up(K, 64); }

void w1a8_prep(const int8_t* x, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* xsum) {
  const int64_t kp = round_up(K, 64);
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

// Few activation rows: lane 4i + j of the result is sum_k (x[i][k] + 128) * bit_jk - 128 * popcount(w_j), the dot of
// row i with the 0/1 bits of weight row j; the accumulators' 64-bit sums fit their low 32 bits (upper halves zero),
// so they are summed across lanes as 32-bit lanes (sum_each16).
template <int MR, int NR>
__m512i w1a8_tile(const uint8_t* x, int64_t xs, const uint32_t* w, int64_t KW) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc[16];
  for (int t = 0; t < 16; ++t) acc[t] = zero;
  alignas(16) int32_t pc[4] = {};
  for (int64_t c = 0; c < KW; c += 2) {  // two 32-bit words = one 64-byte mask
    __mmask64 mask[NR];
    for (int j = 0; j < NR; ++j) {
      const uint64_t lo = w[j * KW + c], hi = c + 1 < KW ? w[j * KW + c + 1] : 0u;
      const uint64_t b = lo | (hi << 32);
      pc[j] += static_cast<int32_t>(_mm_popcnt_u64(b));
      mask[j] = _cvtu64_mask64(b);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(x + i * xs + 32 * c);
      for (int j = 0; j < NR; ++j)
        acc[4 * i + j] = _mm512_add_epi64(acc[4 * i + j], _mm512_sad_epu8(_mm512_maskz_mov_epi8(mask[j], xv), zero));
    }
  }
  const __m512i pcv = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(pc)));
  return _mm512_sub_epi32(sum_each16(acc), _mm512_slli_epi32(pcv, 7));
}

using W1A8Tile = __m512i (*)(const uint8_t*, int64_t, const uint32_t*, int64_t);
constexpr int kW1A8MR = 4, kW1A8NR = 4;
const W1A8Tile kW1A8Tiles[kW1A8MR][kW1A8NR] = {
    {w1a8_tile<1, 1>, w1a8_tile<1, 2>, w1a8_tile<1, 3>, w1a8_tile<1, 4>},
    {w1a8_tile<2, 1>, w1a8_tile<2, 2>, w1a8_tile<2, 3>, w1a8_tile<2, 4>},
    {w1a8_tile<3, 1>, w1a8_tile<3, 2>, w1a8_tile<3, 3>, w1a8_tile<3, 4>},
    {w1a8_tile<4, 1>, w1a8_tile<4, 2>, w1a8_tile<4, 3>, w1a8_tile<4, 4>},
};

// Many activation rows: the sign bits of a block of columns are expanded per call into the int8 panels of the int8
// GEMM, +1/-1 bytes for one plane and (s1 + s2) / 2 in {-1, 0, 1} for two (a ternary weight), and multiplied by the
// same vpdpbusd tile; colsum (per column, the sum of its panel bytes) removes the x + 128 shift of the activations.
void pack_sign_panel(const uint32_t* w, const uint32_t* w2, int64_t KW, int64_t K, int64_t xs, int64_t cols,
                     uint8_t* rows, uint8_t* panel, int32_t* colsum) {
  const __m512i one = _mm512_set1_epi8(1), minus_one = _mm512_set1_epi8(-1), zero = _mm512_setzero_si512();
  for (int64_t c = 0; c < kPanel; ++c) {
    uint8_t* row = rows + c * xs;
    int32_t sum = 0;
    for (int64_t k = 0; k < xs; k += 64) {
      const int64_t word = k / 32;
      uint64_t b1 = 0, b2 = 0;
      if (c < cols && word < KW) {
        b1 = w[c * KW + word] | (word + 1 < KW ? uint64_t(w[c * KW + word + 1]) << 32 : 0);
        if (w2) b2 = w2[c * KW + word] | (word + 1 < KW ? uint64_t(w2[c * KW + word + 1]) << 32 : 0);
      }
      const int64_t left = c < cols ? K - k : 0;
      const __mmask64 valid = left >= 64 ? ~__mmask64(0) : left > 0 ? (__mmask64(1) << left) - 1 : 0;
      // one plane: s = +-1; two: (s1 + s2) / 2 = (b1 - 1) + b2 for bits b1, b2 (any pair, not only ternary ones)
      __m512i v = _mm512_mask_blend_epi8(_cvtu64_mask64(b1), minus_one, w2 ? zero : one);
      if (w2) v = _mm512_mask_add_epi8(v, _cvtu64_mask64(b2), v, one);
      _mm512_store_si512(row + k, _mm512_maskz_mov_epi8(valid, v));
      // padding bits past K are 0 (checked by the op), so the popcounts count real entries only
      const int32_t n = static_cast<int32_t>(_mm_popcnt_u64(valid));
      sum += w2 ? static_cast<int32_t>(_mm_popcnt_u64(b1) + _mm_popcnt_u64(b2)) - n
                : 2 * static_cast<int32_t>(_mm_popcnt_u64(b1)) - n;
    }
    colsum[c] = sum;
  }
  pack_panel(reinterpret_cast<const int8_t*>(rows), xs, xs, kPanel, panel);
}

template <int MR, int NP>
void w1a8_panel_tile(const uint8_t* x, int64_t xs, const uint8_t* panels, int64_t panel_bytes, const int32_t* colsum,
                     int planes, int64_t n, int64_t cols, int64_t m, const ScaleEpilogue& ep, float* out,
                     int64_t ldo) {
  __m512i acc[MR][NP];
  panel_dots<MR, NP>(x, xs, panels, panel_bytes, acc);
  for (int p = 0; p < NP; ++p) {
    const int64_t c0 = n + p * kPanel, valid = min64(kPanel, cols - p * kPanel);
    const __mmask16 cm = lanes_left(valid);
    const __m512 vsw = _mm512_maskz_loadu_ps(cm, ep.sw + c0);
    const __m512 vb = ep.bias ? _mm512_maskz_loadu_ps(cm, ep.bias + c0) : _mm512_setzero_ps();
    const __m512i shift = _mm512_slli_epi32(_mm512_loadu_si512(colsum + p * kPanel), 7);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const int64_t r = m + i;
      // two planes: the panel holds (s1 + s2) / 2, the op's dot is the sum of both planes' dots
      const __m512i dot = _mm512_slli_epi32(_mm512_sub_epi32(acc[i][p], shift), planes - 1);
      __m512 y = _mm512_mul_ps(_mm512_set1_ps(ep.sx[r * ep.sx_stride]), vsw);
      y = _mm512_mul_ps(y, _mm512_cvtepi32_ps(dot));
      if (ep.bias) y = _mm512_add_ps(y, vb);
      _mm512_mask_storeu_ps(out + r * ldo + c0, cm, y);
    }
  }
}

using W1A8PanelTile = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, const int32_t*, int, int64_t, int64_t,
                               int64_t, const ScaleEpilogue&, float*, int64_t);
const W1A8PanelTile kW1A8PanelTiles[2][kPanelMR] = {
    {w1a8_panel_tile<1, 1>, w1a8_panel_tile<2, 1>, w1a8_panel_tile<3, 1>, w1a8_panel_tile<4, 1>,
     w1a8_panel_tile<5, 1>, w1a8_panel_tile<6, 1>, w1a8_panel_tile<7, 1>, w1a8_panel_tile<8, 1>},
    {w1a8_panel_tile<1, 2>, w1a8_panel_tile<2, 2>, w1a8_panel_tile<3, 2>, w1a8_panel_tile<4, 2>,
     w1a8_panel_tile<5, 2>, w1a8_panel_tile<6, 2>, w1a8_panel_tile<7, 2>, w1a8_panel_tile<8, 2>},
};

void w1a8_gemm_panels(const uint8_t* x, int64_t M, int64_t K, const uint32_t* w, const uint32_t* w2, int64_t n0,
                      int64_t n1, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  const int64_t KW = (K + 31) / 32, xs = round_up(K, 64), panel_bytes = xs * kPanel;
  const int planes = w2 ? 2 : 1;
  int64_t nblk = kL2Bytes / panel_bytes * kPanel;
  nblk = nblk < 2 * kPanel ? 2 * kPanel : nblk;
  const int64_t count = min64(nblk, round_up(n1 - n0, kPanel)) / kPanel;  // panels held at once
  uint8_t* panels = static_cast<uint8_t*>(aligned_alloc(64, count * panel_bytes + kPanel * xs));
  uint8_t* rows = panels + count * panel_bytes;  // the expanded rows of one panel
  int32_t* colsum = static_cast<int32_t*>(aligned_alloc(64, count * kPanel * sizeof(int32_t)));
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t n = nb; n < ne; n += kPanel) {
      const int64_t j = (n - nb) / kPanel;
      pack_sign_panel(w + n * KW, w2 ? w2 + n * KW : nullptr, KW, K, xs, min64(kPanel, ne - n), rows,
                      panels + j * panel_bytes, colsum + j * kPanel);
    }
    for (int64_t m = 0; m < M; m += kPanelMR) {
      const int mr = static_cast<int>(min64(kPanelMR, M - m));
      for (int64_t n = nb; n < ne; n += 2 * kPanel) {
        const int64_t cols = min64(2 * kPanel, ne - n), j = (n - nb) / kPanel;
        kW1A8PanelTiles[cols > kPanel][mr - 1](x + m * xs, xs, panels + j * panel_bytes, panel_bytes,
                                               colsum + j * kPanel, planes, n, cols, m, ep, out, ldo);
      }
    }
  }
  free(colsum);
  free(panels);
}

constexpr int64_t kW1A8PanelMinRows = 32;  // below this, expanding the bits costs more than it saves

void w1a8_gemm(const uint8_t* xbuf, const int32_t* xsum, int64_t M, int64_t K, const int32_t* wbits,
               const int32_t* wbits2, int64_t n0, int64_t n1, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  if (M >= kW1A8PanelMinRows) {
    w1a8_gemm_panels(xbuf, M, K, reinterpret_cast<const uint32_t*>(wbits), reinterpret_cast<const uint32_t*>(wbits2),
                     n0, n1, ep, out, ldo);
    return;
  }
  const int64_t KW = (K + 31) / 32, xs = round_up(K, 64), planes = wbits2 ? 2 : 1;
  const uint32_t* w = reinterpret_cast<const uint32_t*>(wbits);
  const uint32_t* w2 = reinterpret_cast<const uint32_t*>(wbits2);
  int64_t nblk = kL2Bytes / (KW > 0 ? KW * 4 * planes : 1) / kW1A8NR * kW1A8NR;
  nblk = nblk < kW1A8NR ? kW1A8NR : nblk;
  for (int64_t nb = n0; nb < n1; nb += nblk) {
    const int64_t ne = min64(nb + nblk, n1);
    for (int64_t m = 0; m < M; m += kW1A8MR) {
      const int mr = static_cast<int>(min64(kW1A8MR, M - m));
      alignas(64) float sxv[16];
      alignas(64) int32_t xsv[16];
      for (int lane = 0; lane < 16; ++lane) {  // row operands in lanes 4i + j
        const int64_t r = lane_row(m, mr, lane);
        sxv[lane] = ep.sx[r * ep.sx_stride];
        xsv[lane] = static_cast<int32_t>(planes) * xsum[r];
      }
      const __m512 sx = _mm512_load_ps(sxv);
      const __m512i planes_xsum = _mm512_load_si512(xsv);
      for (int64_t n = nb; n < ne; n += kW1A8NR) {
        const int nr = static_cast<int>(min64(kW1A8NR, ne - n));
        const W1A8Tile tile = kW1A8Tiles[mr - 1][nr - 1];
        __m512i plus = tile(xbuf + m * xs, xs, w + n * KW, KW);
        if (w2) plus = _mm512_add_epi32(plus, tile(xbuf + m * xs, xs, w2 + n * KW, KW));
        // dot = sum over the planes of 2 * plus - sum(x); then the epilogue of scale_epilogue
        const __m512i dot = _mm512_sub_epi32(_mm512_slli_epi32(plus, 1), planes_xsum);
        const __mmask8 cm = static_cast<__mmask8>((1u << nr) - 1);
        const __m512 sw = _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, ep.sw + n));
        __m512 y = _mm512_mul_ps(_mm512_mul_ps(sx, sw), _mm512_cvtepi32_ps(dot));
        if (ep.bias) y = _mm512_add_ps(y, _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, ep.bias + n)));
        store_rows4(y, mr, cm, out + m * ldo + n, ldo);
      }
    }
  }
}

void expand_signs(const uint32_t* w, const uint32_t* w2, int64_t KW, int64_t K, int64_t r0, int64_t r1, int8_t* out) {
  const __m512i one = _mm512_set1_epi8(1), minus_one = _mm512_set1_epi8(-1), two = _mm512_set1_epi8(2);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t k = 0; k < K; k += 64) {
      const int64_t word = k / 32;
      const uint64_t b1 = w[r * KW + word] | (word + 1 < KW ? uint64_t(w[r * KW + word + 1]) << 32 : 0);
      const __mmask64 valid = K - k >= 64 ? ~__mmask64(0) : (__mmask64(1) << (K - k)) - 1;
      __m512i v = _mm512_mask_blend_epi8(_cvtu64_mask64(b1), minus_one, one);
      if (w2) {  // s1 + s2 = (s1 - 1) + 2 * b2
        const uint64_t b2 = w2[r * KW + word] | (word + 1 < KW ? uint64_t(w2[r * KW + word + 1]) << 32 : 0);
        v = _mm512_mask_add_epi8(_mm512_sub_epi8(v, one), _cvtu64_mask64(b2), _mm512_sub_epi8(v, one), two);
      }
      _mm512_mask_storeu_epi8(out + r * K + k, valid, v);
    }
}

// ------------------------------------------------------------------------------------------------ W1A1

template <int MR, int NR, bool AND>
void w1a1_tile(const uint32_t* x, const uint32_t* w, int64_t KW, int32_t* pop) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  for (int64_t c = 0; c < KW; c += 16) {
    const __mmask16 km = lanes_left(KW - c);
    __m512i xv[MR];
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_maskz_loadu_epi32(km, x + i * KW + c);
    for (int j = 0; j < NR; ++j) {
      const __m512i wv = _mm512_maskz_loadu_epi32(km, w + j * KW + c);
      for (int i = 0; i < MR; ++i)
        acc[i][j] = _mm512_add_epi64(
            acc[i][j], _mm512_popcnt_epi64(AND ? _mm512_and_si512(xv[i], wv) : _mm512_xor_si512(xv[i], wv)));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) pop[i * NR + j] = static_cast<int32_t>(_mm512_reduce_add_epi64(acc[i][j]));
}

using W1A1Tile = void (*)(const uint32_t*, const uint32_t*, int64_t, int32_t*);
constexpr int kW1A1MR = 4, kW1A1NR = 4;
template <bool AND>
struct W1A1Tiles {
  static constexpr W1A1Tile t[kW1A1MR][kW1A1NR] = {
      {w1a1_tile<1, 1, AND>, w1a1_tile<1, 2, AND>, w1a1_tile<1, 3, AND>, w1a1_tile<1, 4, AND>},
      {w1a1_tile<2, 1, AND>, w1a1_tile<2, 2, AND>, w1a1_tile<2, 3, AND>, w1a1_tile<2, 4, AND>},
      {w1a1_tile<3, 1, AND>, w1a1_tile<3, 2, AND>, w1a1_tile<3, 3, AND>, w1a1_tile<3, 4, AND>},
      {w1a1_tile<4, 1, AND>, w1a1_tile<4, 2, AND>, w1a1_tile<4, 3, AND>, w1a1_tile<4, 4, AND>},
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

// Elementwise and memory-bound: the AVX2 code is as fast (every AVX-512 CPU runs it).
bool fake_quantize(const float* x, int64_t C, int64_t r0, int64_t r1, const float* lo, const float* scale,
                   int64_t cs, float levels, float* out) {
  return avx2_kernels().fake_quantize(x, C, r0, r1, lo, scale, cs, levels, out);
}

// ------------------------------------------------------------------------------------------------ attention
// attention_scores_scalar and attention_values_scalar of cpu_kernels.h in intrinsics (GCC vectorizes their 16-lane
// sums only partly): the same products and sums in the same order, so every path gives the same values. Lanes past D
// load zero queries or probabilities, and adding the zero products to a lane sum (never -0: sums start at +0) changes
// nothing.

// Elements [d, d + 16) (lanes m) of row j as floats.
inline __m512 load_key_values(const KeyRows& kv, int64_t j, int64_t d, __mmask16 m) {
  if (!kv.codes) return _mm512_maskz_loadu_ps(m, kv.values + kv.row(j) + d);
  const __m512 codes = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, kv.codes + kv.row(j) + d)));
  return _mm512_fmadd_ps(codes, _mm512_set1_ps(kv.step), _mm512_set1_ps(kv.lo));
}

void attention_scores(const float* q, const KeyRows& k, int64_t S, int64_t D, float* out) {
  for (int64_t j = 0; j < S; ++j) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d += 16) {
      const __mmask16 m = lanes_left(D - d);
      acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + d), load_key_values(k, j, d, m)));
    }
    const __m256 lo = _mm512_castps512_ps256(acc);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    const __m256 s8 = _mm256_add_ps(lo, hi);                                                // l + 8
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));  // l + 4
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                // l + 2
    out[j] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));                       // 0 + 1
  }
}

void attention_values(const float* p, const KeyRows& v, int64_t S, int64_t D, float* out) {
  for (int64_t d0 = 0; d0 < D; d0 += 64) {  // 64 outputs in four registers, summed over the keys in order
    __mmask16 m[4];
    __m512 acc[4];
    for (int c = 0; c < 4; ++c) {
      m[c] = lanes_left(D - d0 - 16 * c);
      acc[c] = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < S; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j]);
      for (int c = 0; c < 4; ++c)
        acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(pj, load_key_values(v, j, d0 + 16 * c, m[c])));
    }
    for (int c = 0; c < 4; ++c) _mm512_mask_storeu_ps(out + d0 + 16 * c, m[c], acc[c]);
  }
}

const Kernels kTable = {"avx512-vnni", quantize_affine, quantize_absmax, fake_quantize, int8_prep_stride, int8_prep,
                        int8_gemm, w1a8_prep_stride, w1a8_prep, w1a8_gemm, w1a1_gemm, int8_epilogue_rows,
                        expand_signs, attention_scores, attention_values};

}  // namespace

const Kernels& avx512_kernels() { return kTable; }

}  // namespace fq_cpu
