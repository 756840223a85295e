// Launchers of the CUDA kernels (fq_kernels.cu), called by the op implementations in fq_ops_cuda.cpp.
// Raw pointers and the stream only, so the .cu needs no torch headers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fq_cuda {

// out = (sx*sw)*A + (sx*zw)*Rx + (zx*sw)*ws + (K*zx)*zw + bias; zx null for symmetric activations;
// W1A8 uses only sx, sw and bias. Per-row strides are 0 for one broadcast value.
struct Int8Epilogue {
  const float* sx; int64_t sx_stride;
  const float* zx; int64_t zx_stride;
  const float* sw; const float* zw; const int32_t* ws; const float* bias;  // bias may be null
  float k;
};

cudaError_t launch_int8_gemm(const void* x, bool x_signed, const int8_t* w, int64_t M, int64_t N, int64_t K,
                             const Int8Epilogue& ep, float* out, cudaStream_t stream);
cudaError_t launch_w1a8_gemm(const int8_t* x, const int32_t* w_bits, int64_t M, int64_t N, int64_t K,
                             const Int8Epilogue& ep, float* out, cudaStream_t stream);
cudaError_t launch_w1a1_gemm(const int32_t* x_bits, const int32_t* w_bits, int64_t M, int64_t N, int64_t K,
                             bool unsigned_act, const float* sx, int64_t sx_stride, const float* sw, const float* bias,
                             float* out, cudaStream_t stream);

}  // namespace fq_cuda
