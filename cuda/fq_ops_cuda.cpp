// CUDA implementations of the fq_plugin:: GEMM ops: argument checks, device guard, current stream, and the
// registration for the CUDA dispatch key. The kernels are in fq_kernels.cu. Built only by a CUDA build of the
// extension (setup.py defines FQ_WITH_CUDA then).
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/bitwise_and.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/ones.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda_kernels.h"

namespace {

constexpr int64_t kMaxK = 65536;


void check(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim, const at::Device& device) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on ", device, ", got ", t.device());
}

void check_vec(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t n, bool broadcast_ok,
               const at::Device& device) {
  check(t, name, dtype, 1, device);
  TORCH_CHECK_VALUE(t.size(0) == n || (broadcast_ok && t.size(0) == 1), name, " must have shape [", n, "]",
                    broadcast_ok ? " or [1]" : "", ", got ", t.sizes());
}

const float* bias_ptr(const c10::optional<at::Tensor>& bias, at::Tensor& holder, int64_t n, const at::Device& d) {
  if (!bias.has_value()) return nullptr;
  check_vec(*bias, "bias", at::kFloat, n, false, d);
  holder = bias->contiguous();
  return holder.data_ptr<float>();
}

void check_padding(const at::Tensor& bits, int64_t K, const char* name) {
  const int64_t rem = K % 32;
  if (rem == 0 || bits.size(0) == 0 || bits.size(1) == 0) return;
  const int64_t extra = ~((int64_t(1) << rem) - 1);  // as int32: the bits past K in the last word
  const bool dirty = at::bitwise_and(bits.select(1, bits.size(1) - 1), extra).any().item<bool>();
  TORCH_CHECK_VALUE(!dirty, name, ": padding bits past K=", K, " must be 0 (use pack_signs)");
}

at::Tensor int8_linear_impl(const at::Tensor& x_q_in, bool x_signed, const at::Tensor& x_scale_in,
                            const at::Tensor* x_zero_in, const at::Tensor& w_q_in, const at::Tensor& w_scale_in,
                            const at::Tensor& w_zero_in, const at::Tensor& w_sum_in,
                            const c10::optional<at::Tensor>& bias_in) {
  const at::Device dev = x_q_in.device();
  check(x_q_in, "x_q", x_signed ? at::kChar : at::kByte, 2, dev);
  const int64_t M = x_q_in.size(0), K = x_q_in.size(1);
  TORCH_CHECK_VALUE(K <= kMaxK, "K=", K, " exceeds ", kMaxK, ": int32 accumulation of 8-bit products could overflow");
  check_vec(x_scale_in, "x_scale", at::kFloat, M, true, dev);
  if (x_zero_in) check_vec(*x_zero_in, "x_zero", at::kFloat, M, true, dev);
  check(w_q_in, "w_q", at::kChar, 2, dev);
  TORCH_CHECK_VALUE(w_q_in.size(1) == K, "w_q must have ", K, " columns to match the activations, got shape ",
                    w_q_in.sizes());
  const int64_t N = w_q_in.size(0);
  check_vec(w_scale_in, "w_scale", at::kFloat, N, false, dev);
  check_vec(w_zero_in, "w_zero", at::kFloat, N, false, dev);
  check_vec(w_sum_in, "w_sum", at::kInt, N, false, dev);
  const c10::cuda::CUDAGuard guard(dev);
  const at::Tensor x_q = x_q_in.contiguous(), w_q = w_q_in.contiguous(), x_scale = x_scale_in.contiguous();
  const at::Tensor x_zero = x_zero_in ? x_zero_in->contiguous() : at::Tensor();
  const at::Tensor w_scale = w_scale_in.contiguous(), w_zero = w_zero_in.contiguous(), w_sum = w_sum_in.contiguous();
  at::Tensor bias;
  const float* bp = bias_ptr(bias_in, bias, N, dev);
  at::Tensor out = at::empty({M, N}, x_q.options().dtype(at::kFloat));
  if (M == 0 || N == 0) return out;
  fq_cuda::Int8Epilogue ep{x_scale.data_ptr<float>(), x_scale.size(0) == 1 ? 0 : 1,
                           x_zero.defined() ? x_zero.data_ptr<float>() : nullptr,
                           x_zero.defined() && x_zero.size(0) != 1 ? 1 : 0,
                           w_scale.data_ptr<float>(), w_zero.data_ptr<float>(), w_sum.data_ptr<int32_t>(), bp,
                           static_cast<float>(K)};
  C10_CUDA_CHECK(fq_cuda::launch_int8_gemm(x_q.data_ptr(), x_signed, w_q.data_ptr<int8_t>(), M, N, K, ep,
                                           out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor int8_linear_cuda(const at::Tensor& x_q, const at::Tensor& x_scale, const at::Tensor& x_zero,
                            const at::Tensor& w_q, const at::Tensor& w_scale, const at::Tensor& w_zero,
                            const at::Tensor& w_sum, const c10::optional<at::Tensor>& bias) {
  return int8_linear_impl(x_q, false, x_scale, &x_zero, w_q, w_scale, w_zero, w_sum, bias);
}

at::Tensor int8_linear_symmetric_cuda(const at::Tensor& x_q, const at::Tensor& x_scale, const at::Tensor& w_q,
                                      const at::Tensor& w_scale, const at::Tensor& w_zero, const at::Tensor& w_sum,
                                      const c10::optional<at::Tensor>& bias) {
  return int8_linear_impl(x_q, true, x_scale, nullptr, w_q, w_scale, w_zero, w_sum, bias);
}

at::Tensor binary_linear_w1a8_cuda(const at::Tensor& x_q_in, const at::Tensor& x_scale_in,
                                   const at::Tensor& w_bits_in, const at::Tensor& w_scale_in,
                                   const c10::optional<at::Tensor>& bias_in, int64_t K, int64_t planes) {
  const at::Device dev = x_q_in.device();
  check(x_q_in, "x_q", at::kChar, 2, dev);
  const int64_t M = x_q_in.size(0), KW = (K + 31) / 32;
  TORCH_CHECK_VALUE(x_q_in.size(1) == K, "K=", K, " does not match x_q with ", x_q_in.size(1), " columns");
  TORCH_CHECK_VALUE(K <= kMaxK, "K=", K, " exceeds ", kMaxK, ": int32 accumulation of 8-bit products could overflow");
  check_vec(x_scale_in, "x_scale", at::kFloat, M, true, dev);
  check(w_bits_in, "w_bits", at::kInt, 2, dev);
  TORCH_CHECK_VALUE(w_bits_in.size(1) == KW, "w_bits must have ", KW, " columns to match the activations, got shape ",
                    w_bits_in.sizes());
  TORCH_CHECK_VALUE(planes == 1 || planes == 2, "planes must be 1 or 2, got ", planes);
  TORCH_CHECK_VALUE(w_bits_in.size(0) % planes == 0, "w_bits must have planes * N rows for planes=", planes,
                    ", got shape ", w_bits_in.sizes());
  const int64_t N = w_bits_in.size(0) / planes;
  check_vec(w_scale_in, "w_scale", at::kFloat, N, false, dev);
  if (planes == 2) {
    // Exact integer dots of every plane row (unit scales; |dot| < 2^24), then the epilogue of the CPU kernels on
    // their sum: (x_scale * w_scale) * (dot_1 + dot_2) + bias.
    at::Tensor bias;
    bias_ptr(bias_in, bias, N, dev);  // validates it
    const at::Tensor ones = at::ones({2 * N}, w_scale_in.options());
    const at::Tensor dots = binary_linear_w1a8_cuda(x_q_in, ones.narrow(0, 0, 1), w_bits_in, ones, c10::nullopt, K, 1);
    const at::Tensor scales = at::mul(x_scale_in.view({-1, 1}), w_scale_in.view({1, -1}));
    const at::Tensor out = at::mul(scales, at::add(dots.narrow(1, 0, N), dots.narrow(1, N, N)));
    return bias.defined() ? at::add(out, bias) : out;
  }
  const c10::cuda::CUDAGuard guard(dev);
  const at::Tensor x_q = x_q_in.contiguous(), x_scale = x_scale_in.contiguous(), w_bits = w_bits_in.contiguous();
  const at::Tensor w_scale = w_scale_in.contiguous();
  at::Tensor bias;
  const float* bp = bias_ptr(bias_in, bias, N, dev);
  check_padding(w_bits, K, "w_bits");
  at::Tensor out = at::empty({M, N}, x_q.options().dtype(at::kFloat));
  if (M == 0 || N == 0) return out;
  fq_cuda::Int8Epilogue ep{x_scale.data_ptr<float>(), x_scale.size(0) == 1 ? 0 : 1, nullptr, 0,
                           w_scale.data_ptr<float>(), nullptr, nullptr, bp, static_cast<float>(K)};
  C10_CUDA_CHECK(fq_cuda::launch_w1a8_gemm(x_q.data_ptr<int8_t>(), w_bits.data_ptr<int32_t>(), M, N, K, ep,
                                           out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor binary_linear_w1a1_cuda(const at::Tensor& x_bits_in, const at::Tensor& x_scale_in,
                                   const at::Tensor& w_bits_in, const at::Tensor& w_scale_in,
                                   const c10::optional<at::Tensor>& bias_in, int64_t K, bool unsigned_act) {
  const at::Device dev = x_bits_in.device();
  check(x_bits_in, "x_bits", at::kInt, 2, dev);
  const int64_t M = x_bits_in.size(0), KW = (K + 31) / 32;
  TORCH_CHECK_VALUE(K >= 0 && x_bits_in.size(1) == KW, "x_bits must have ceil(K/32) = ", KW,
                    " words per row for K=", K, ", got shape ", x_bits_in.sizes());
  check_vec(x_scale_in, "x_scale", at::kFloat, M, true, dev);
  check(w_bits_in, "w_bits", at::kInt, 2, dev);
  TORCH_CHECK_VALUE(w_bits_in.size(1) == KW, "w_bits must have ", KW, " columns to match the activations, got shape ",
                    w_bits_in.sizes());
  const int64_t N = w_bits_in.size(0);
  check_vec(w_scale_in, "w_scale", at::kFloat, N, false, dev);
  const c10::cuda::CUDAGuard guard(dev);
  const at::Tensor x_bits = x_bits_in.contiguous(), x_scale = x_scale_in.contiguous(), w_bits = w_bits_in.contiguous();
  const at::Tensor w_scale = w_scale_in.contiguous();
  at::Tensor bias;
  const float* bp = bias_ptr(bias_in, bias, N, dev);
  check_padding(x_bits, K, "x_bits");
  check_padding(w_bits, K, "w_bits");
  at::Tensor out = at::empty({M, N}, x_bits.options().dtype(at::kFloat));
  if (M == 0 || N == 0) return out;
  C10_CUDA_CHECK(fq_cuda::launch_w1a1_gemm(x_bits.data_ptr<int32_t>(), w_bits.data_ptr<int32_t>(), M, N, K,
                                           unsigned_act, x_scale.data_ptr<float>(), x_scale.size(0) == 1 ? 0 : 1,
                                           w_scale.data_ptr<float>(), bp, out.data_ptr<float>(),
                                           c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fq_plugin, CUDA, m) {
  m.impl("int8_linear", &int8_linear_cuda);
  m.impl("int8_linear_symmetric", &int8_linear_symmetric_cuda);
  m.impl("binary_linear_w1a8", &binary_linear_w1a8_cuda);
  m.impl("binary_linear_w1a1", &binary_linear_w1a1_cuda);
}
