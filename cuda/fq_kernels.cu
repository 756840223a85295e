// CUDA kernels of the fq_plugin:: GEMM ops (sm_80, sm_90): int8 x int8 and 1-bit x int8 with dp4a, 1-bit x 1-bit
// with xor/and + __popc, each with the fused float32 epilogue of the CPU kernels. Correctness first: one tiled
// kernel shape (64 x 64 outputs per block of 256 threads, 4 x 4 per thread, 64-deep K steps through shared memory).
// The quantizers and pack_signs run on CUDA through the registered PyTorch reference. This file holds only device
// code and its launchers (no torch headers, so nvcc is quick); fq_ops_cuda.cpp checks arguments and registers the ops.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"

namespace {

constexpr int kTile = 64;      // outputs per block in M and in N
constexpr int kWords = 16;     // 32-bit words per row of a K step (64 int8 values or 512 bits)
constexpr int kThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

// d = a . b + c over four bytes; the activation bytes are unsigned (affine codes) or signed, the weights signed.
template <bool SIGNED_X>
__device__ __forceinline__ int dp4a(int a, int b, int c) {
  int d;
  if (SIGNED_X)
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  else
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// Four consecutive bytes of a row of `cols` bytes starting at column k (zero past the end), as one word.
__device__ __forceinline__ int load_bytes4(const uint8_t* row, int64_t k, int64_t cols) {
  if (k + 4 <= cols && (reinterpret_cast<uintptr_t>(row + k) & 3) == 0) return *reinterpret_cast<const int*>(row + k);
  uint32_t v = 0;
  for (int b = 0; b < 4; ++b)
    if (k + b < cols) v |= uint32_t(row[k + b]) << (8 * b);
  return static_cast<int>(v);
}

// Four signs (bits k..k+3 of a packed row) as bytes +1 / -1, zero past K.
__device__ __forceinline__ int load_signs4(const uint32_t* row, int64_t k, int64_t K) {
  const uint32_t bits = row[k >> 5] >> (k & 31);
  uint32_t v = 0;
  for (int b = 0; b < 4; ++b)
    if (k + b < K) v |= ((bits >> b) & 1u ? 0x01u : 0xFFu) << (8 * b);
  return static_cast<int>(v);
}

// A[m, n] = sum_k x[m, k] * w[n, k] over 8-bit codes (W1A8: w expanded from sign bits), and Rx[m] = sum_k x[m, k].
template <bool SIGNED_X, bool SIGN_W>
__global__ void __launch_bounds__(kThreads) dot8_kernel(const uint8_t* __restrict__ x, const void* __restrict__ w,
                                                        int64_t M, int64_t N, int64_t K, fq_cuda::Int8Epilogue ep,
                                                        float* __restrict__ out) {
  __shared__ int xs[kTile][kWords + 1];  // +1: no bank conflicts on the column reads below
  __shared__ int wsh[kTile][kWords + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kTile, n0 = int64_t(blockIdx.x) * kTile;
  const int64_t kw = (K + 31) / 32;
  int acc[4][4] = {};
  int rx[4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += 4 * kWords) {
    for (int e = threadIdx.x; e < kTile * kWords; e += kThreads) {
      const int r = e / kWords, c = e % kWords;
      const int64_t k = k0 + 4 * c;
      const int64_t m = m0 + r, n = n0 + r;
      xs[r][c] = m < M && k < K ? load_bytes4(x + m * K, k, K) : 0;
      if (SIGN_W)
        wsh[r][c] = n < N && k < K ? load_signs4(static_cast<const uint32_t*>(w) + n * kw, k, K) : 0;
      else
        wsh[r][c] = n < N && k < K ? load_bytes4(static_cast<const uint8_t*>(w) + n * K, k, K) : 0;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kWords; ++c) {
      int a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[ty * 4 + i][c];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = wsh[tx * 4 + j][c];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        rx[i] = dp4a<SIGNED_X>(a[i], 0x01010101, rx[i]);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = dp4a<SIGNED_X>(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
    const float sx = ep.sx[m * ep.sx_stride], zx = ep.zx ? ep.zx[m * ep.zx_stride] : 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx * 4 + j;
      if (n >= N) continue;
      float v;
      if (SIGN_W)
        v = (sx * ep.sw[n]) * static_cast<float>(acc[i][j]);
      else
        v = (sx * ep.sw[n]) * static_cast<float>(acc[i][j]) + (sx * ep.zw[n]) * static_cast<float>(rx[i]) +
            (zx * ep.sw[n]) * static_cast<float>(ep.ws[n]) + (ep.k * zx) * ep.zw[n];
      out[m * N + n] = ep.bias ? v + ep.bias[n] : v;
    }
  }
}

// Popcounts of packed rows: signed dot = K - 2*popc(x ^ w); unsigned dot = 2*popc(x & w) - popc(x).
template <bool AND>
__global__ void __launch_bounds__(kThreads) popcount_kernel(const uint32_t* __restrict__ x,
                                                            const uint32_t* __restrict__ w, int64_t M, int64_t N,
                                                            int64_t KW, int64_t K, const float* sx,
                                                            int64_t sx_stride, const float* sw, const float* bias,
                                                            float* __restrict__ out) {
  __shared__ uint32_t xs[kTile][kWords + 1];
  __shared__ uint32_t wsh[kTile][kWords + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kTile, n0 = int64_t(blockIdx.x) * kTile;
  int acc[4][4] = {};
  int xpop[4] = {};
  for (int64_t c0 = 0; c0 < KW; c0 += kWords) {
    for (int e = threadIdx.x; e < kTile * kWords; e += kThreads) {
      const int r = e / kWords, c = e % kWords;
      const int64_t m = m0 + r, n = n0 + r, word = c0 + c;
      xs[r][c] = m < M && word < KW ? x[m * KW + word] : 0u;
      wsh[r][c] = n < N && word < KW ? w[n * KW + word] : 0u;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kWords; ++c) {
      uint32_t a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[ty * 4 + i][c];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = wsh[tx * 4 + j][c];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        xpop[i] += __popc(a[i]);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += __popc(AND ? (a[i] & b[j]) : (a[i] ^ b[j]));
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx * 4 + j;
      if (n >= N) continue;
      const int dot = AND ? 2 * acc[i][j] - xpop[i] : static_cast<int>(K) - 2 * acc[i][j];
      const float v = (sx[m * sx_stride] * sw[n]) * static_cast<float>(dot);
      out[m * N + n] = bias ? v + bias[n] : v;
    }
  }
}

dim3 grid_for(int64_t M, int64_t N) {
  return dim3(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
}

}  // namespace

namespace fq_cuda {

cudaError_t launch_int8_gemm(const void* x, bool x_signed, const int8_t* w, int64_t M, int64_t N, int64_t K,
                             const Int8Epilogue& ep, float* out, cudaStream_t stream) {
  const uint8_t* xp = static_cast<const uint8_t*>(x);
  if (x_signed)
    dot8_kernel<true, false><<<grid_for(M, N), kThreads, 0, stream>>>(xp, w, M, N, K, ep, out);
  else
    dot8_kernel<false, false><<<grid_for(M, N), kThreads, 0, stream>>>(xp, w, M, N, K, ep, out);
  return cudaGetLastError();
}

cudaError_t launch_w1a8_gemm(const int8_t* x, const int32_t* w_bits, int64_t M, int64_t N, int64_t K,
                             const Int8Epilogue& ep, float* out, cudaStream_t stream) {
  dot8_kernel<true, true><<<grid_for(M, N), kThreads, 0, stream>>>(reinterpret_cast<const uint8_t*>(x), w_bits, M,
                                                                    N, K, ep, out);
  return cudaGetLastError();
}

cudaError_t launch_w1a1_gemm(const int32_t* x_bits, const int32_t* w_bits, int64_t M, int64_t N, int64_t K,
                             bool unsigned_act, const float* sx, int64_t sx_stride, const float* sw, const float* bias,
                             float* out, cudaStream_t stream) {
  const int64_t KW = (K + 31) / 32;
  const uint32_t* xp = reinterpret_cast<const uint32_t*>(x_bits);
  const uint32_t* wp = reinterpret_cast<const uint32_t*>(w_bits);
  if (unsigned_act)
    popcount_kernel<true><<<grid_for(M, N), kThreads, 0, stream>>>(xp, wp, M, N, KW, K, sx, sx_stride, sw, bias, out);
  else
    popcount_kernel<false><<<grid_for(M, N), kThreads, 0, stream>>>(xp, wp, M, N, KW, K, sx, sx_stride, sw, bias, out);
  return cudaGetLastError();
}

}  // namespace fq_cuda
