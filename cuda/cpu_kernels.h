// CPU kernels of fq_plugin._C: one table of raw-pointer functions per instruction set.
//
// The ISA-specific translation units (cpu_kernels_avx2.cpp, cpu_kernels_avx512.cpp) are compiled with their
// own -m flags and include nothing but this header and the C/intrinsics headers: code built with AVX-512 flags
// must never be emitted as a shared inline symbol (ATen, std::) that the linker could pick for generic code.
// Everything in the .cpp files lives in an anonymous namespace except the table getter.
#pragma once
#include <math.h>
#include <string.h>

#include <cstdint>

namespace fq_cpu {

// Affine epilogue of the int8 GEMM, one output element:
//   out = (sx*sw)*A + (sx*zw)*rx + (zx*sw)*ws + (K*zx)*zw + bias
// Per-row pointers use a stride of 0 for a single broadcast value; the symmetric op passes zx = 0.
struct Int8Epilogue {
  const float* sx; int64_t sx_stride;
  const float* zx; int64_t zx_stride;
  const int32_t* rx;      // sum_k x_q per row (exact)
  const float* sw; const float* zw; const int32_t* ws; const float* bias;  // bias may be null
  float k;
};

// Epilogue of the binary ops: out = (sx*sw)*dot + bias.
struct ScaleEpilogue {
  const float* sx; int64_t sx_stride;
  const float* sw; const float* bias;  // bias may be null
};

// S rows of D keys or values, row j at element j * stride, or at offsets[j] where offsets is not null (decoding caches
// whose keys are not reordered: key j of a hypothesis lies in the row of the ancestor that computed it): float32
// (values), or 8-bit codes (codes not null) read as the activation quantizer's values fma(code, step, lo) (one
// rounding, as ATen's addcmul).
struct KeyRows {
  const float* values;
  const uint8_t* codes;
  float lo, step;
  int64_t stride;
  const int64_t* offsets;
  int64_t row(int64_t j) const { return offsets ? offsets[j] : j * stride; }
};

struct Kernels {
  const char* name;
  // Rows [r0, r1) of x [*, K]: codes of (x - xmin[r]) / scale[r] (stride 0: one range for all rows).
  // Returns true if a NaN was met (the caller raises).
  bool (*quantize_affine)(const float* x, int64_t K, int64_t r0, int64_t r1, const float* xmin,
                          const float* scale, int64_t range_stride, float levels, uint8_t* out);
  // Rows [r0, r1): gamma = max|x| (written to gamma[r]), codes round(x*127/gamma). Returns true if a
  // non-finite value was met.
  bool (*quantize_absmax)(const float* x, int64_t K, int64_t r0, int64_t r1, int8_t* out, float* gamma);
  // Rows [r0, r1) of x [*, C]: fake quantization fma(clamp(round((x - lo) / s), 0, levels), s, lo) with lo, s
  // per column (stride 1) or one pair (stride 0): the values of fq_plugin.quant.fake_quantize_with_scale (ATen's
  // addcmul rounds once, like an FMA). Returns true if a NaN was met (the caller raises).
  bool (*fake_quantize)(const float* x, int64_t C, int64_t r0, int64_t r1, const float* lo, const float* scale,
                        int64_t col_stride, float levels, float* out);

  // int8 GEMM. The activations are first copied into an ISA-specific zero-padded layout of
  // int8_prep_stride(K) bytes per row (rows [r0, r1)), which also yields the exact row sums.
  int64_t (*int8_prep_stride)(int64_t K);
  void (*int8_prep)(const void* x, bool x_signed, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* rx);
  // out[m, n] for all m < M and n in [n0, n1); w is int8 [N, K]; out has leading dimension ldo.
  void (*int8_gemm)(const uint8_t* xbuf, bool x_signed, int64_t M, int64_t K, const int8_t* w, int64_t n0,
                    int64_t n1, const Int8Epilogue& ep, float* out, int64_t ldo);

  // W1A8: int8 activations x packed sign words. wbits2 (may be null) is a second plane of sign words with the
  // same layout: then dot = dot(plane 1) + dot(plane 2) (a ternary weight: both planes share one scale per row).
  int64_t (*w1a8_prep_stride)(int64_t K);
  void (*w1a8_prep)(const int8_t* x, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* xsum);
  void (*w1a8_gemm)(const uint8_t* xbuf, const int32_t* xsum, int64_t M, int64_t K, const int32_t* wbits,
                    const int32_t* wbits2, int64_t n0, int64_t n1, const ScaleEpilogue& ep, float* out, int64_t ldo);

  // W1A1: packed words x packed words (KW words per row, padding bits 0).
  // unsigned_act: dot = 2*popcount(x & w) - popcount(x) (xpop[m] = popcount(x row)); else K - 2*popcount(x ^ w).
  void (*w1a1_gemm)(const int32_t* xbits, int64_t M, int64_t KW, int64_t K, const int32_t* wbits, int64_t n0,
                    int64_t n1, bool unsigned_act, const int32_t* xpop, const ScaleEpilogue& ep, float* out,
                    int64_t ldo);

  // The epilogue of an int8 GEMM computed elsewhere (torch._int_mm), in place: rows [r0, r1) of acc [*, N] hold
  // int32 dot products (shifted: of x - 128 with the weights, so 128 * ws[n] is added back) and are overwritten
  // with the float outputs.
  void (*int8_epilogue_rows)(int32_t* acc, bool shifted, int64_t N, int64_t r0, int64_t r1, const Int8Epilogue& ep);
  // Rows [r0, r1) of sign words [*, KW] (and of a second plane w2, may be null) as int8 weights [*, K] for an int8
  // GEMM: s = +-1, or s1 + s2 with two planes.
  void (*expand_signs)(const uint32_t* w, const uint32_t* w2, int64_t KW, int64_t K, int64_t r0, int64_t r1,
                       int8_t* out);

  // Attention of one query (float32, D values) over S keys or values: out[j] = q . k_j summed in lanes (see
  // attention_scores_scalar), and out[d] = sum over j in order of p[j] * v_j[d]. The same values on every path.
  void (*attention_scores)(const float* q, const KeyRows& k, int64_t S, int64_t D, float* out);
  void (*attention_values)(const float* p, const KeyRows& v, int64_t S, int64_t D, float* out);
};

const Kernels& portable_kernels();
#if defined(FQ_HAVE_X86_KERNELS)
const Kernels& avx2_kernels();
const Kernels& avx512_kernels();
#endif

// Shared scalar pieces (internal linkage in every translation unit that includes this header).
namespace {

// One value of fq_plugin.quant.fake_quantize_with_scale: fma(clamp(round((v - lo) / s), 0, levels), s, lo).
inline float fake_quantize_value(float v, float lo, float s, float levels) {
  float q = nearbyintf((v - lo) / s);
  q = q < 0.f ? 0.f : (q > levels ? levels : q);
  return fmaf(q, s, lo);
}

inline float int8_epilogue(const Int8Epilogue& ep, int64_t m, int64_t n, int32_t a) {
  const float sx = ep.sx[m * ep.sx_stride], zx = ep.zx[m * ep.zx_stride];
  float out = (sx * ep.sw[n]) * static_cast<float>(a) + (sx * ep.zw[n]) * static_cast<float>(ep.rx[m]) +
              (zx * ep.sw[n]) * static_cast<float>(ep.ws[n]) + (ep.k * zx) * ep.zw[n];
  return ep.bias ? out + ep.bias[n] : out;
}

inline float scale_epilogue(const ScaleEpilogue& ep, int64_t m, int64_t n, int32_t dot) {
  float out = (ep.sx[m * ep.sx_stride] * ep.sw[n]) * static_cast<float>(dot);
  return ep.bias ? out + ep.bias[n] : out;
}

// Scalar forms of int8_epilogue_rows and expand_signs (the AVX2 and portable paths: torch._int_mm serves only the
// AVX-512 path by default).
inline void int8_epilogue_rows_scalar(int32_t* acc, bool shifted, int64_t N, int64_t r0, int64_t r1,
                                      const Int8Epilogue& ep) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t n = 0; n < N; ++n) {
      const float y = int8_epilogue(ep, r, n, acc[r * N + n] + (shifted ? 128 * ep.ws[n] : 0));
      memcpy(acc + r * N + n, &y, sizeof(y));
    }
}

inline void expand_signs_scalar(const uint32_t* w, const uint32_t* w2, int64_t KW, int64_t K, int64_t r0, int64_t r1,
                                int8_t* out) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t k = 0; k < K; ++k) {
      int v = 2 * static_cast<int>((w[r * KW + k / 32] >> (k % 32)) & 1u) - 1;
      if (w2) v += 2 * static_cast<int>((w2[r * KW + k / 32] >> (k % 32)) & 1u) - 1;
      out[r * K + k] = static_cast<int8_t>(v);
    }
}

// Element d of row j of keys or values.
inline float key_value(const KeyRows& kv, int64_t j, int64_t d) {
  const int64_t i = kv.row(j) + d;
  return kv.codes ? fmaf(static_cast<float>(kv.codes[i]), kv.step, kv.lo) : kv.values[i];
}

// Keys read through offsets lie scattered over the rows of their ancestors, where the hardware prefetcher cannot follow
// them: the attention op prefetches the S keys of its next row while the kernels read those of this row.
inline void prefetch_keys(const KeyRows& kv, int64_t S, int64_t D) {
  const int64_t bytes = kv.codes ? D : D * static_cast<int64_t>(sizeof(float));
  for (int64_t j = 0; j < S; ++j) {
    const char* p = kv.codes ? reinterpret_cast<const char*>(kv.codes + kv.row(j))
                             : reinterpret_cast<const char*>(kv.values + kv.row(j));
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b);
  }
}

// sum_d q[d] * k_j[d] in one order on every CPU path (fq_plugin.ops.reference.lane_dot spells it in ATen ops; the
// AVX-512 path in intrinsics): 16 lane sums over d (products and sums rounded separately: the extension is built
// with -ffp-contract=off), then the lanes added pairwise, 8 + 8, 4 + 4, 2 + 2, 1 + 1.
constexpr int kLanes = 16;
inline void attention_scores_scalar(const float* q, const KeyRows& k, int64_t S, int64_t D, float* out) {
  for (int64_t j = 0; j < S; ++j) {
    float acc[kLanes] = {};
    int64_t d = 0;
    for (; d + kLanes <= D; d += kLanes)
      for (int l = 0; l < kLanes; ++l) acc[l] += q[d + l] * key_value(k, j, d + l);
    for (int l = 0; d + l < D; ++l) acc[l] += q[d + l] * key_value(k, j, d + l);
    for (int l = 0; l < 8; ++l) acc[l] += acc[l + 8];  // fixed trip counts: unrolled
    for (int l = 0; l < 4; ++l) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; ++l) acc[l] += acc[l + 2];
    out[j] = acc[0] + acc[1];
  }
}

inline void attention_values_scalar(const float* p, const KeyRows& v, int64_t S, int64_t D, float* out) {
  int64_t d0 = 0;
  for (; d0 + kLanes <= D; d0 += kLanes) {  // 16 outputs at a time, each summed over the keys in order
    float acc[kLanes] = {};
    for (int64_t j = 0; j < S; ++j)
      for (int l = 0; l < kLanes; ++l) acc[l] += p[j] * key_value(v, j, d0 + l);
    for (int l = 0; l < kLanes; ++l) out[d0 + l] = acc[l];
  }
  for (; d0 < D; ++d0) {
    float acc = 0.f;
    for (int64_t j = 0; j < S; ++j) acc += p[j] * key_value(v, j, d0);
    out[d0] = acc;
  }
}

inline int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// How far ahead of its loads an int8 rows-kernel tile of tile_bytes weight bytes prefetches: at least two tiles and
// 8 KB. With few activation rows the tiles stream the weights from memory; one tile ahead (2 KB at K = 512 on AVX-512)
// was too close (BENCHMARKS.md, "int8 GEMM").
inline int64_t int8_prefetch_distance(int64_t tile_bytes) { return 2 * tile_bytes > 8192 ? 2 * tile_bytes : 8192; }

}  // namespace
}  // namespace fq_cpu
