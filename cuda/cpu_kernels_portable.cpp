// Portable scalar CPU kernels: any architecture, default compiler flags. Also the baseline the SIMD paths are
// tested against (besides the PyTorch reference).
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

namespace fq_cpu {
namespace {

bool quantize_affine(const float* x, int64_t K, int64_t r0, int64_t r1, const float* xmin, const float* scale,
                     int64_t rs, float levels, uint8_t* out) {
  bool nan = false;
  for (int64_t r = r0; r < r1; ++r) {
    const float lo = xmin[r * rs], s = scale[r * rs];
    for (int64_t k = 0; k < K; ++k) {
      float v = (x[r * K + k] - lo) / s;  // a true division: bit-identical to the PyTorch reference
      if (v != v) {
        nan = true;
        v = 0.f;
      }
      v = nearbyintf(v);  // round half to even, like torch.round
      v = v < 0.f ? 0.f : (v > levels ? levels : v);
      out[r * K + k] = static_cast<uint8_t>(v);
    }
  }
  return nan;
}

bool quantize_absmax(const float* x, int64_t K, int64_t r0, int64_t r1, int8_t* out, float* gamma) {
  bool bad = false;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * K;
    float g = 0.f;
    for (int64_t k = 0; k < K; ++k) {
      const float a = fabsf(xr[k]);
      if (!(a <= 3.402823466e38f)) bad = true;  // NaN or Inf
      g = a > g ? a : g;
    }
    gamma[r] = g;
    for (int64_t k = 0; k < K; ++k) {
      float v = g > 0.f ? nearbyintf((xr[k] * 127.f) / g) : 0.f;
      v = v < -127.f ? -127.f : (v > 127.f ? 127.f : v);
      out[r * K + k] = static_cast<int8_t>(v);
    }
  }
  return bad;
}

bool fake_quantize(const float* x, int64_t C, int64_t r0, int64_t r1, const float* lo, const float* scale,
                   int64_t cs, float levels, float* out) {
  bool nan = false;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float v = x[r * C + c];
      if (v != v) nan = true;
      out[r * C + c] = fake_quantize_value(v, lo[c * cs], scale[c * cs], levels);
    }
  return nan;
}

// int8 GEMM: activations widened to int16 rows of K.
int64_t int8_prep_stride(int64_t K) { return K * 2; }

void int8_prep(const void* x, bool x_signed, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* rx) {
  for (int64_t r = r0; r < r1; ++r) {
    int16_t* dst = reinterpret_cast<int16_t*>(buf + r * K * 2);
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int16_t v = x_signed ? static_cast<const int8_t*>(x)[r * K + k] : static_cast<const uint8_t*>(x)[r * K + k];
      dst[k] = v;
      sum += v;
    }
    rx[r] = sum;
  }
}

void int8_gemm(const uint8_t* xbuf, bool, int64_t M, int64_t K, const int8_t* w, int64_t n0, int64_t n1,
               const Int8Epilogue& ep, float* out, int64_t ldo) {
  const int16_t* x = reinterpret_cast<const int16_t*>(xbuf);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* wn = w + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const int16_t* xm = x + m * K;
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<int32_t>(xm[k]) * wn[k];
      out[m * ldo + n] = int8_epilogue(ep, m, n, acc);
    }
  }
}

// W1A8: activations kept as int8 rows of K.
int64_t w1a8_prep_stride(int64_t K) { return K; }

void w1a8_prep(const int8_t* x, int64_t K, int64_t r0, int64_t r1, uint8_t* buf, int32_t* xsum) {
  for (int64_t r = r0; r < r1; ++r) {
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += x[r * K + k];
    memcpy(buf + r * K, x + r * K, K);
    xsum[r] = sum;
  }
}

// Sum of x where the sign bit of w is 1; the dot product with the signs is 2 * plus - sum(x).
int32_t plus_sum(const int8_t* x, const uint32_t* w, int64_t K) {
  int32_t plus = 0;
  for (int64_t k = 0; k < K; ++k) plus += ((w[k >> 5] >> (k & 31)) & 1u) ? x[k] : 0;
  return plus;
}

void w1a8_gemm(const uint8_t* xbuf, const int32_t* xsum, int64_t M, int64_t K, const int32_t* wbits,
               const int32_t* wbits2, int64_t n0, int64_t n1, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  const int8_t* x = reinterpret_cast<const int8_t*>(xbuf);
  const int64_t KW = (K + 31) / 32;
  for (int64_t n = n0; n < n1; ++n) {
    const uint32_t* wn = reinterpret_cast<const uint32_t*>(wbits + n * KW);
    for (int64_t m = 0; m < M; ++m) {
      int32_t dot = 2 * plus_sum(x + m * K, wn, K) - xsum[m];
      if (wbits2) dot += 2 * plus_sum(x + m * K, reinterpret_cast<const uint32_t*>(wbits2 + n * KW), K) - xsum[m];
      out[m * ldo + n] = scale_epilogue(ep, m, n, dot);
    }
  }
}

void w1a1_gemm(const int32_t* xbits, int64_t M, int64_t KW, int64_t K, const int32_t* wbits, int64_t n0, int64_t n1,
               bool unsigned_act, const int32_t* xpop, const ScaleEpilogue& ep, float* out, int64_t ldo) {
  const uint32_t* x = reinterpret_cast<const uint32_t*>(xbits);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(wbits);
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      int32_t pop = 0;
      for (int64_t i = 0; i < KW; ++i) {
        const uint32_t a = x[m * KW + i], b = w[n * KW + i];
        pop += __builtin_popcount(unsigned_act ? (a & b) : (a ^ b));
      }
      const int32_t dot = unsigned_act ? 2 * pop - xpop[m] : static_cast<int32_t>(K) - 2 * pop;
      out[m * ldo + n] = scale_epilogue(ep, m, n, dot);
    }
  }
}

const Kernels kTable = {"portable", quantize_affine, quantize_absmax, fake_quantize, int8_prep_stride, int8_prep,
                        int8_gemm, w1a8_prep_stride, w1a8_prep, w1a8_gemm, w1a1_gemm, int8_epilogue_rows_scalar,
                        expand_signs_scalar, attention_scores_scalar,
                        attention_values_scalar};

}  // namespace

const Kernels& portable_kernels() { return kTable; }

}  // namespace fq_cpu
