// fq_plugin._C: registration of the fq_plugin:: ops (TORCH_LIBRARY), their CPU implementations (argument
// checks, threading with at::parallel_for, run-time choice of the CPU kernels) and a few pybind helpers.
// The kernels themselves are in cpu_kernels_*.cpp (raw pointers, one file per instruction set) and fq_ops_cuda.cu.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_kernels.h"

namespace {

using fq_cpu::Kernels;

constexpr int64_t kMaxK = 65536;  // 255 * 128 * K < 2^31: int32 accumulators stay exact
constexpr int64_t kMinParallelWork = 1 << 18;  // multiply-adds below which threading costs more than it saves

// ------------------------------------------------------------------------------------------------ CPU paths

struct CpuPath {
  const char* name;
  const Kernels* (*get)();
  bool (*supported)();
};

const Kernels* get_portable() { return &fq_cpu::portable_kernels(); }
bool always() { return true; }
#if defined(FQ_HAVE_X86_KERNELS)
const Kernels* get_avx2() { return &fq_cpu::avx2_kernels(); }
const Kernels* get_avx512() { return &fq_cpu::avx512_kernels(); }
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
}
bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
         __builtin_cpu_supports("avx512vpopcntdq");
}
#endif

// From the most portable to the fastest.
const std::vector<CpuPath>& all_paths() {
  static const std::vector<CpuPath> paths = {
      {"portable", get_portable, always},
#if defined(FQ_HAVE_X86_KERNELS)
      {"avx2", get_avx2, has_avx2},
      {"avx512-vnni", get_avx512, has_avx512},
#endif
  };
  return paths;
}

std::vector<std::string> supported_cpu_isas() {
  std::vector<std::string> names;
  for (const auto& p : all_paths())
    if (p.supported()) names.push_back(p.name);
  return names;
}

const Kernels* best_kernels() {
  const Kernels* best = nullptr;
  for (const auto& p : all_paths())
    if (p.supported()) best = p.get();
  return best;
}

std::atomic<const Kernels*> g_kernels{best_kernels()};

const Kernels& kernels() { return *g_kernels.load(std::memory_order_relaxed); }

std::string set_cpu_isa(std::string name) {
  if (name == "auto") {
    g_kernels.store(best_kernels());
    return kernels().name;
  }
  if (name == "avx512") name = "avx512-vnni";
  std::string known = "auto";
  for (const auto& p : all_paths()) {
    known += std::string(", ") + p.name;
    if (name == p.name) {
      if (!p.supported())
        throw pybind11::value_error("this CPU cannot run the " + name + " path (it has: " +
                                    [] { std::string s; for (auto& n : supported_cpu_isas()) s += n + " "; return s; }() + ")");
      g_kernels.store(p.get());
      return kernels().name;
    }
  }
  throw pybind11::value_error("unknown CPU path '" + name + "' (choose from " + known + ")");
}

// Test hook: fill new outputs and scratch buffers with a byte pattern so that unwritten elements show.
std::atomic<int> g_poison{-1};

at::Tensor new_buffer(at::IntArrayRef sizes, at::ScalarType dtype) {
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(dtype));
  const int poison = g_poison.load();
  if (poison >= 0 && t.numel() > 0) std::memset(t.data_ptr(), poison, t.nbytes());
  return t;
}

// Work of one element of a quantization pass (subtraction, division, rounding, clamp, fma) in multiply-adds, for
// grain_for: counted as one, the decoder's 256 x 512 activations ran on one thread.
constexpr int64_t kElementwiseWork = 8;

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(1, work_per_item));
}

// ------------------------------------------------------------------------------------------------ checks

void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be on the CPU like the other arguments, got ", t.device());
}

void check_vector(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t n, bool broadcast_ok) {
  check_tensor(t, name, dtype, 1);
  TORCH_CHECK_VALUE(t.size(0) == n || (broadcast_ok && t.size(0) == 1), name, " must have shape [", n, "]",
                    broadcast_ok ? " or [1]" : "", ", got ", t.sizes());
}

void check_bits(int64_t bits) {
  TORCH_CHECK_VALUE(bits >= 2 && bits <= 8, "quantization bit width must be an integer in [2, 8], got ", bits);
}

void check_bias(const c10::optional<at::Tensor>& bias, int64_t n) {
  if (bias.has_value()) check_vector(*bias, "bias", at::kFloat, n, false);
}

void check_padding(const at::Tensor& bits, int64_t K, const char* name) {
  const int64_t rem = K % 32, kw = bits.size(1);
  if (rem == 0 || kw == 0) return;
  const int32_t* p = bits.data_ptr<int32_t>();
  const uint32_t extra = ~((uint32_t(1) << rem) - 1);
  for (int64_t r = 0; r < bits.size(0); ++r)
    TORCH_CHECK_VALUE((static_cast<uint32_t>(p[r * kw + kw - 1]) & extra) == 0, name, ": padding bits past K=", K,
                      " must be 0 (use pack_signs)");
}

// ------------------------------------------------------------------------------------------------ quantizers

at::Tensor quantize_affine_u8_cpu(const at::Tensor& x_in, const at::Tensor& x_min, const at::Tensor& x_max,
                                  int64_t bits) {
  check_tensor(x_in, "x", at::kFloat, 2);
  const int64_t M = x_in.size(0), K = x_in.size(1);
  check_vector(x_min, "x_min", at::kFloat, M, true);
  check_vector(x_max, "x_max", at::kFloat, M, true);
  check_bits(bits);
  const int64_t levels = (int64_t(1) << bits) - 1;
  // The step size of fq_plugin.quant.affine_scale, s = (x_max - x_min) / levels or 1 for a zero range: single
  // IEEE float operations, so bit-identical to the ATen ops (and cheaper per call than dispatching them).
  const at::Tensor lo = x_min.contiguous(), hi = x_max.contiguous();
  at::Tensor scale = at::empty({lo.size(0)}, at::TensorOptions().dtype(at::kFloat));
  for (int64_t i = 0; i < lo.size(0); ++i) {
    const float l = lo.data_ptr<float>()[i], h = hi.data_ptr<float>()[i], span = h - l;
    TORCH_CHECK_VALUE(l == l, "x_min contains NaN; quantization of NaN is undefined");
    TORCH_CHECK_VALUE(h == h, "x_max contains NaN; quantization of NaN is undefined");
    scale.data_ptr<float>()[i] = span > 0.f ? span / static_cast<float>(levels) : 1.f;
  }
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = new_buffer({M, K}, at::kByte);
  std::atomic<bool> nan{false};
  const Kernels& kr = kernels();
  const int64_t stride = lo.size(0) == 1 ? 0 : 1;
  at::parallel_for(0, M, grain_for(kElementwiseWork * K), [&](int64_t r0, int64_t r1) {
    if (kr.quantize_affine(x.data_ptr<float>(), K, r0, r1, lo.data_ptr<float>(), scale.data_ptr<float>(), stride,
                           static_cast<float>(levels), out.data_ptr<uint8_t>()))
      nan = true;
  });
  TORCH_CHECK_VALUE(!nan.load(), "x contains NaN; quantization of NaN is undefined");
  return out;
}

at::Tensor fake_quantize_affine_cpu(const at::Tensor& x_in, const at::Tensor& x_min_in, const at::Tensor& scale_in,
                                    int64_t bits) {
  TORCH_CHECK_TYPE(x_in.scalar_type() == at::kFloat, "x must be torch.float32, got ", x_in.scalar_type());
  TORCH_CHECK_VALUE(x_in.dim() >= 1, "x must have at least one dimension");
  const int64_t C = x_in.size(-1), M = C ? x_in.numel() / C : 0;
  check_vector(x_min_in, "x_min", at::kFloat, C, true);
  check_vector(scale_in, "scale", at::kFloat, C, true);
  TORCH_CHECK_VALUE(x_min_in.size(0) == scale_in.size(0), "x_min and scale must have the same shape");
  check_bits(bits);
  const at::Tensor x = x_in.contiguous(), lo = x_min_in.contiguous(), scale = scale_in.contiguous();
  at::Tensor out = new_buffer(x.sizes(), at::kFloat);
  std::atomic<bool> nan{false};
  const Kernels& kr = kernels();
  const int64_t stride = lo.size(0) == 1 ? 0 : 1;
  at::parallel_for(0, M, grain_for(kElementwiseWork * C), [&](int64_t r0, int64_t r1) {
    if (kr.fake_quantize(x.data_ptr<float>(), C, r0, r1, lo.data_ptr<float>(), scale.data_ptr<float>(), stride,
                         static_cast<float>((int64_t(1) << bits) - 1), out.data_ptr<float>()))
      nan = true;
  });
  TORCH_CHECK_VALUE(!nan.load(), "x contains NaN; quantization of NaN is undefined");
  return out;
}

// ------------------------------------------------------------------------------------ softmax and LayerNorm parts
// Inference forms of fq_plugin.quant.parts in one call instead of ~35 and ~10 ATen ops and quantizer calls, each
// quantized part on a frozen grid [2, n] (row 0: x_min, row 1: step size; one pair per bucket or one for all).
// Bit-identical to the ATen reference: the elementwise steps are single IEEE operations in the same order, and the
// exponential, square root, row sums and means are ATen's own ops on tensors of the reference's shapes (their
// vectorized rounding differs from a hand-written loop's), so QAT checkpoints translate as they did with the ATen ops.

struct Grid {
  const float* lo = nullptr;  // null: the part is not quantized
  const float* step = nullptr;
  int64_t stride = 0;
  float levels = 0.f;

  // v fake-quantized in bucket i (v itself without a grid); a NaN input sets nan.
  float operator()(float v, int64_t i, bool& nan) const {
    if (!lo) return v;
    if (v != v) nan = true;
    return fq_cpu::fake_quantize_value(v, lo[i * stride], step[i * stride], levels);
  }

  // The n values at v fake-quantized in place by the selected CPU path's kernel, in bucket i or (per_value) bucket c
  // for value c; true if one was NaN.
  bool row(float* v, int64_t n, int64_t i, bool per_value) const {
    if (!lo) return false;
    const int64_t first = per_value ? 0 : i * stride;
    return kernels().fake_quantize(v, n, 0, 1, lo + first, step + first, per_value ? stride : 0, levels, v);
  }
};

// keep holds the contiguous copy the pointers read.
Grid make_grid(const c10::optional<at::Tensor>& g, const char* name, int64_t buckets, int64_t bits, at::Tensor& keep) {
  Grid grid;
  if (!g.has_value()) return grid;
  check_tensor(*g, name, at::kFloat, 2);
  TORCH_CHECK_VALUE(g->size(0) == 2 && (g->size(1) == buckets || g->size(1) == 1), name, " must have shape [2, ",
                    buckets, "] or [2, 1], got ", g->sizes());
  keep = g->contiguous();
  grid.lo = keep.data_ptr<float>();
  grid.step = grid.lo + keep.size(1);
  grid.stride = keep.size(1) == 1 ? 0 : 1;
  grid.levels = static_cast<float>((int64_t(1) << bits) - 1);
  return grid;
}

// The softmax of quantized parts row by row, in the steps quantized_softmax and quantized_attention share: shift_row
// (scores minus the row max over unmasked keys, masked keys -inf; a row max that is not finite taken as 0; in place
// allowed), then ATen's exp_ and row sums over all rows, then finish_row. m: the row's mask, ms its key stride.
void shift_row(const float* s, const bool* m, int64_t ms, int64_t S, float* o) {
  float row_max = -INFINITY;
  for (int64_t j = 0; j < S; ++j)
    if (!m[j * ms] && !(s[j] <= row_max)) row_max = s[j];  // NaN wins, as in amax
  if (!std::isfinite(row_max)) row_max = 0.f;
  for (int64_t j = 0; j < S; ++j) o[j] = m[j * ms] ? -INFINITY : s[j] - row_max;
}

struct SoftmaxGrids {
  at::Tensor keep[3];  // the contiguous grids the pointers read
  Grid num, den, out;
  SoftmaxGrids(const c10::optional<at::Tensor>& num_grid, const c10::optional<at::Tensor>& den_grid,
               const c10::optional<at::Tensor>& out_grid, int64_t heads, int64_t bits)
      : num(make_grid(num_grid, "num_grid", heads, bits, keep[0])),
        den(make_grid(den_grid, "den_grid", heads, bits, keep[1])),
        out(make_grid(out_grid, "out_grid", heads, bits, keep[2])) {}

  // Row o of exponentials with row sum `sum` in head h: quantized numerator / quantized denominator, quantized,
  // masked keys 0. A NaN met by a quantizer sets nan.
  void finish_row(float* o, float sum, int64_t h, const bool* m, int64_t ms, int64_t S, bool& nan) const {
    float d = den(sum, h, nan);
    if (!(d > 0.f)) d = 1.f;  // every key masked: all-zero probabilities instead of 0/0
    nan |= num.row(o, S, h, false);
    for (int64_t j = 0; j < S; ++j) o[j] = o[j] / d;
    nan |= out.row(o, S, h, false);
    for (int64_t j = 0; j < S; ++j)
      if (m[j * ms]) o[j] = 0.f;
  }
};

// The mask row of row r = (b * H + h) * T + t of a [B, H, T, S] product (mask expanded to that shape).
struct MaskRows {
  const bool* p;
  int64_t H, T, mb, mh, mt, ms;
  explicit MaskRows(const at::Tensor& mask) : p(mask.data_ptr<bool>()), H(mask.size(1)), T(mask.size(2)),
      mb(mask.stride(0)), mh(mask.stride(1)), mt(mask.stride(2)), ms(mask.stride(3)) {}
  const bool* operator()(int64_t r) const { return p + r / (H * T) * mb + r / T % H * mh + r % T * mt; }
};

at::Tensor check_mask(const at::Tensor& mask, at::IntArrayRef shape) {
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool, "mask must be torch.bool, got ", mask.scalar_type());
  TORCH_CHECK_VALUE(mask.device().is_cpu(), "mask must be on the CPU like the other arguments");
  TORCH_CHECK_VALUE(mask.dim() <= 4 && at::infer_size(mask.sizes(), shape) == shape,
                    "mask of shape ", mask.sizes(), " does not broadcast to ", shape);
  return mask.expand(shape);
}

at::Tensor quantized_softmax_cpu(const at::Tensor& scores_in, const at::Tensor& mask_in,
                                 const c10::optional<at::Tensor>& num_grid, const c10::optional<at::Tensor>& den_grid,
                                 const c10::optional<at::Tensor>& out_grid, int64_t bits) {
  check_tensor(scores_in, "scores", at::kFloat, 4);
  check_bits(bits);
  const int64_t B = scores_in.size(0), H = scores_in.size(1), T = scores_in.size(2), S = scores_in.size(3);
  const at::Tensor mask = check_mask(mask_in, scores_in.sizes());
  TORCH_CHECK_VALUE(S > 0, "scores must have at least one key");
  const at::Tensor scores = scores_in.contiguous();
  const SoftmaxGrids grids(num_grid, den_grid, out_grid, H, bits);
  at::Tensor out = new_buffer({B, H, T, S}, at::kFloat);
  const float* sp = scores.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const MaskRows row_mask(mask);
  const int64_t rows = B * H * T;
  at::parallel_for(0, rows, grain_for(2 * S), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) shift_row(sp + r * S, row_mask(r), row_mask.ms, S, op + r * S);
  });
  out.exp_();
  const at::Tensor sums = out.sum(-1);
  const float* sum = sums.data_ptr<float>();
  std::atomic<bool> nan{false};
  at::parallel_for(0, rows, grain_for(4 * S), [&](int64_t r0, int64_t r1) {
    bool seen = false;
    for (int64_t r = r0; r < r1; ++r)
      grids.finish_row(op + r * S, sum[r], r / T % H, row_mask(r), row_mask.ms, S, seen);
    if (seen) nan = true;
  });
  TORCH_CHECK_VALUE(!nan.load(), "scores contain NaN; quantization of NaN is undefined");
  return out;
}

// Keys or values t (float32, or codes with kv_grid column `which`) as the kernels read them.
fq_cpu::KeyRows key_rows(const at::Tensor& t, const at::Tensor& kv_grid, int which) {
  if (!kv_grid.defined()) return {t.data_ptr<float>(), nullptr, 0.f, 0.f, t.stride(1), nullptr};
  const float* lo_step = kv_grid.data_ptr<float>();
  return {nullptr, t.data_ptr<uint8_t>(), lo_step[which], lo_step[2 + which], t.stride(1), nullptr};
}

// Attention of decoding queries in one pass: scores q . k (Kernels::attention_scores), the quantized softmax above,
// probabilities . v (Kernels::attention_values), for fq_plugin.ops.reference.quantized_attention. Hypotheses
// b * group .. b * group + group - 1 read the keys and values of row b of k and v (beam search, one copy per sentence);
// with key_rows [B, S], hypothesis b reads key j from row key_rows[b][j] (a decoding cache that beam search does not
// reorder). k and v are float32, or the 8-bit codes of their activation quantizers with kv_grid (x_min and step of k
// and v); their keys may be strided (a view of a longer cache).
std::tuple<at::Tensor, at::Tensor> quantized_attention_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& mask_in, int64_t heads,
    const c10::optional<at::Tensor>& kv_grid_in, const c10::optional<at::Tensor>& num_grid,
    const c10::optional<at::Tensor>& den_grid, const c10::optional<at::Tensor>& out_grid, int64_t bits,
    const c10::optional<at::Tensor>& key_rows_in) {
  const bool codes = kv_grid_in.has_value(), gathered = key_rows_in.has_value();
  check_tensor(q_in, "q", at::kFloat, 3);
  check_tensor(k_in, "k", codes ? at::kByte : at::kFloat, 3);
  check_tensor(v_in, "v", codes ? at::kByte : at::kFloat, 3);
  check_bits(bits);
  TORCH_CHECK_VALUE(heads > 0 && q_in.size(0) % heads == 0 && k_in.size(0) % heads == 0, "q and k must have a ",
                    "multiple of heads=", heads, " rows, got ", q_in.sizes(), " and ", k_in.sizes());
  const int64_t BH = q_in.size(0), T = q_in.size(1), D = q_in.size(2), S = k_in.size(1);
  const int64_t B = BH / heads, Bk = k_in.size(0) / heads;
  TORCH_CHECK_VALUE(v_in.sizes() == k_in.sizes() && k_in.size(2) == D && (gathered || (Bk > 0 ? B % Bk == 0 : B == 0)),
                    "k and v must have the shape [rows, S, ", D, "] with rows dividing the ", BH,
                    " rows of q; got k ", k_in.sizes(), ", v ", v_in.sizes());
  TORCH_CHECK_VALUE(S > 0, "k must have at least one key");
  at::Tensor kv_grid, key_row_index;
  if (codes) {
    check_tensor(*kv_grid_in, "kv_grid", at::kFloat, 2);
    TORCH_CHECK_VALUE(kv_grid_in->size(0) == 2 && kv_grid_in->size(1) == 2,
                      "kv_grid must have shape [2, 2] (x_min, step of k and v), got ", kv_grid_in->sizes());
    kv_grid = kv_grid_in->contiguous();
  }
  if (gathered) {
    check_tensor(*key_rows_in, "key_rows", at::kLong, 2);
    TORCH_CHECK_VALUE(key_rows_in->size(0) == B && key_rows_in->size(1) == S, "key_rows must have shape [", B, ", ",
                      S, "] (hypotheses, keys), got ", key_rows_in->sizes());
    key_row_index = key_rows_in->contiguous();
  }
  const at::Tensor mask = check_mask(mask_in, {B, heads, T, S});
  auto rows_of = [](const at::Tensor& t) { return t.stride(2) == 1 ? t : t.contiguous(); };
  const at::Tensor q = rows_of(q_in), k = rows_of(k_in), v = rows_of(v_in);
  const SoftmaxGrids grids(num_grid, den_grid, out_grid, heads, bits);
  at::Tensor probs = new_buffer({B, heads, T, S}, at::kFloat), out = new_buffer({T, BH, D}, at::kFloat);
  const float* qp = q.data_ptr<float>();
  float *pp = probs.data_ptr<float>(), *outp = out.data_ptr<float>();
  const int64_t group = Bk > 0 && !gathered ? B / Bk : 1, rows = BH * T;
  const fq_cpu::KeyRows keys = key_rows(k, kv_grid, 0), values = key_rows(v, kv_grid, 1);
  // Element offsets of every hypothesis' keys (values) from head 0 of row 0, when gathered.
  std::vector<int64_t> key_offsets, value_offsets;
  if (gathered) {
    key_offsets.resize(B * S);
    value_offsets.resize(B * S);
    const int64_t* row_of_key = key_row_index.data_ptr<int64_t>();
    for (int64_t i = 0; i < B * S; ++i) {
      TORCH_CHECK_VALUE(row_of_key[i] >= 0 && row_of_key[i] < Bk, "key_rows must index the ", Bk, " rows of k and v");
      key_offsets[i] = row_of_key[i] * heads * k.stride(0) + i % S * k.stride(1);
      value_offsets[i] = row_of_key[i] * heads * v.stride(0) + i % S * v.stride(1);
    }
  }
  // The keys (values) of hypothesis row bh = hypothesis * heads + head: row sentence * heads + head of k (v), or with
  // key_rows head `head` of the rows the offsets name.
  auto for_row = [&](fq_cpu::KeyRows kv, int64_t row_stride, const std::vector<int64_t>& offsets, int64_t bh) {
    int64_t offset = bh % heads * row_stride;
    if (gathered)
      kv.offsets = offsets.data() + bh / heads * S;
    else
      offset += bh / (heads * group) * heads * row_stride;
    if (kv.codes)
      kv.codes += offset;
    else
      kv.values += offset;
    return kv;
  };
  const MaskRows row_mask(mask);
  const Kernels& kr = kernels();
  at::parallel_for(0, rows, grain_for(2 * S * D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bh = r / T, t = r % T;
      float* p = pp + r * S;
      if (gathered && r + 1 < r1) fq_cpu::prefetch_keys(for_row(keys, k.stride(0), key_offsets, (r + 1) / T), S, D);
      kr.attention_scores(qp + bh * q.stride(0) + t * q.stride(1), for_row(keys, k.stride(0), key_offsets, bh), S,
                           D, p);
      shift_row(p, row_mask(r), row_mask.ms, S, p);
    }
  });
  probs.exp_();
  const at::Tensor sums = probs.sum(-1);
  const float* sum = sums.data_ptr<float>();
  std::atomic<bool> nan{false};
  at::parallel_for(0, rows, grain_for(2 * S * D), [&](int64_t r0, int64_t r1) {
    bool seen = false;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bh = r / T, t = r % T;
      float* p = pp + r * S;
      if (gathered && r + 1 < r1)
        fq_cpu::prefetch_keys(for_row(values, v.stride(0), value_offsets, (r + 1) / T), S, D);
      grids.finish_row(p, sum[r], bh % heads, row_mask(r), row_mask.ms, S, seen);
      kr.attention_values(p, for_row(values, v.stride(0), value_offsets, bh), S, D, outp + (t * BH + bh) * D);
    }
    if (seen) nan = true;
  });
  TORCH_CHECK_VALUE(!nan.load(), "scores contain NaN; quantization of NaN is undefined");
  return {out, probs};
}

at::Tensor quantized_layer_norm_cpu(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& bias,
                                    double eps, const c10::optional<at::Tensor>& num_grid,
                                    const c10::optional<at::Tensor>& den_grid,
                                    const c10::optional<at::Tensor>& quot_grid,
                                    const c10::optional<at::Tensor>& out_grid, int64_t bits) {
  TORCH_CHECK_TYPE(x_in.scalar_type() == at::kFloat, "x must be torch.float32, got ", x_in.scalar_type());
  TORCH_CHECK_VALUE(x_in.dim() >= 1 && x_in.device().is_cpu(), "x must be a CPU tensor with at least one dimension");
  check_bits(bits);
  const int64_t C = x_in.size(-1), M = C ? x_in.numel() / C : 0;
  check_vector(weight, "weight", at::kFloat, C, false);
  check_vector(bias, "bias", at::kFloat, C, false);
  at::Tensor keep[6];
  const Grid num = make_grid(num_grid, "num_grid", C, bits, keep[0]);
  const Grid den = make_grid(den_grid, "den_grid", 1, bits, keep[1]);
  const Grid quot = make_grid(quot_grid, "quot_grid", C, bits, keep[2]);
  const Grid out_q = make_grid(out_grid, "out_grid", C, bits, keep[3]);
  const at::Tensor x = x_in.contiguous();
  keep[4] = weight.contiguous();
  keep[5] = bias.contiguous();
  at::Tensor out = new_buffer(x.sizes(), at::kFloat);
  if (M == 0) return out;
  const float *w = keep[4].data_ptr<float>(), *bp = keep[5].data_ptr<float>();
  float* op = out.data_ptr<float>();
  // out = x - mean (the numerator); squares for the variance.
  const at::Tensor means = x.mean(-1);
  at::Tensor squares = at::empty_like(x);
  const float *xp = x.data_ptr<float>(), *mean = means.data_ptr<float>();
  float* sq = squares.data_ptr<float>();
  at::parallel_for(0, M, grain_for(kElementwiseWork * C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = r * C; i < (r + 1) * C; ++i) {
        op[i] = xp[i] - mean[r];
        sq[i] = op[i] * op[i];
      }
  });
  const at::Tensor dens = at::sqrt(squares.mean(-1) + eps);  // ATen's sqrt: not always correctly rounded
  const float* den_value = dens.data_ptr<float>();
  std::atomic<bool> nan{false};
  at::parallel_for(0, M, grain_for(8 * C), [&](int64_t r0, int64_t r1) {
    bool seen = false;
    for (int64_t r = r0; r < r1; ++r) {
      float* o = op + r * C;
      const float d = den(den_value[r], 0, seen);
      seen |= num.row(o, C, 0, true);
      for (int64_t c = 0; c < C; ++c) o[c] = o[c] / d;
      seen |= quot.row(o, C, 0, true);
      for (int64_t c = 0; c < C; ++c) o[c] = o[c] * w[c];  // then the bias: two roundings, as ATen's mul and add
      for (int64_t c = 0; c < C; ++c) o[c] = o[c] + bp[c];
      seen |= out_q.row(o, C, 0, true);
    }
    if (seen) nan = true;
  });
  TORCH_CHECK_VALUE(!nan.load(), "x contains NaN (or Inf, which makes its centred values NaN); quantization of NaN "
                    "is undefined");
  return out;
}

std::tuple<at::Tensor, at::Tensor> quantize_absmax_i8_cpu(const at::Tensor& x_in) {
  check_tensor(x_in, "x", at::kFloat, 2);
  const int64_t M = x_in.size(0), K = x_in.size(1);
  const at::Tensor x = x_in.contiguous();
  at::Tensor codes = new_buffer({M, K}, at::kChar);
  at::Tensor gamma = new_buffer({M}, at::kFloat);
  std::atomic<bool> bad{false};
  const Kernels& kr = kernels();
  at::parallel_for(0, M, grain_for(K), [&](int64_t r0, int64_t r1) {
    if (kr.quantize_absmax(x.data_ptr<float>(), K, r0, r1, codes.data_ptr<int8_t>(), gamma.data_ptr<float>()))
      bad = true;
  });
  TORCH_CHECK_VALUE(!bad.load(), "x must be finite for absmax quantization (NaN or Inf found)");
  return {codes, gamma / 127};  // the same ATen division as the reference
}

// ------------------------------------------------------------------------------------------------ int8 GEMM

const float kZero = 0.f;

// Row r of x_q (unsigned codes, or signed ones) as the signed operand of torch._int_mm in row r of a (unsigned
// codes are shifted to x - 128; signed ones are used as they are, a is x_q); returns the exact sum of row r of x_q.
int32_t signed_codes(const at::Tensor& x_q, bool x_signed, int64_t r, const at::Tensor& a) {
  const int64_t K = x_q.size(1);
  int32_t sum = 0;
  if (x_signed) {
    const int8_t* src = x_q.data_ptr<int8_t>() + r * K;
    for (int64_t k = 0; k < K; ++k) sum += src[k];
  } else {
    const uint8_t* src = x_q.data_ptr<uint8_t>() + r * K;
    int8_t* dst = a.data_ptr<int8_t>() + r * K;
    for (int64_t k = 0; k < K; ++k) {
      sum += src[k];
      dst[k] = static_cast<int8_t>(src[k] ^ 0x80u);
    }
  }
  return sum;
}

// Who multiplies int8 matrices: torch._int_mm (oneDNN) followed by our epilogue, or our own kernels. On AVX-512 VNNI
// CPUs oneDNN is faster from 16 rows on; with fewer rows (decoding with a small beam) our kernels, which stream cold
// weights once, are. Elsewhere our kernels: without VNNI torch's _int_mm fell back to a loop of ~2 GOP/s on the
// AVX2 machine we measured (BENCHMARKS.md, "int8 GEMM: own kernels or torch._int_mm").
constexpr int64_t kIntMmMinRows = 16;
enum Int8Gemm : int { kGemmAuto, kGemmKernels, kGemmIntMm };
const char* const kInt8GemmNames[] = {"auto", "kernels", "int_mm"};
std::atomic<int> g_int8_gemm{kGemmAuto};

std::string set_int8_gemm(const std::string& name) {
  for (int i = 0; i < 3; ++i)
    if (name == kInt8GemmNames[i]) {
      g_int8_gemm.store(i);
      return name;
    }
  throw pybind11::value_error("unknown int8 GEMM '" + name + "' (choose from auto, kernels, int_mm)");
}

bool use_int_mm(const Kernels& kr, int64_t M, int64_t K) {
  const int mode = g_int8_gemm.load();
  if (K == 0 || mode == kGemmKernels) return false;
  if (mode == kGemmIntMm) return true;
  return M >= kIntMmMinRows && std::strcmp(kr.name, "avx512-vnni") == 0;
}

// out (float [M, N]) = the epilogue ep of torch._int_mm(a, w.t()) (a int8 [M, K], w int8 [N, K]), the int32
// products written into out's memory and converted in place; shifted: a holds unsigned codes minus 128.
void int_mm_into(const Kernels& kr, const at::Tensor& a, const at::Tensor& w, bool shifted,
                 const fq_cpu::Int8Epilogue& ep, at::Tensor& out) {
  const int64_t M = out.size(0), N = out.size(1);
  at::Tensor acc = out.view(at::kInt);
  at::_int_mm_out(acc, a, w.t());
  at::parallel_for(0, M, grain_for(N * 16), [&](int64_t r0, int64_t r1) {
    kr.int8_epilogue_rows(acc.data_ptr<int32_t>(), shifted, N, r0, r1, ep);
  });
}

at::Tensor int8_linear_impl(const at::Tensor& x_q_in, bool x_signed, const at::Tensor& x_scale_in,
                            const at::Tensor* x_zero_in, const at::Tensor& w_q_in, const at::Tensor& w_scale_in,
                            const at::Tensor& w_zero_in, const at::Tensor& w_sum_in,
                            const c10::optional<at::Tensor>& bias_in) {
  check_tensor(x_q_in, "x_q", x_signed ? at::kChar : at::kByte, 2);
  const int64_t M = x_q_in.size(0), K = x_q_in.size(1);
  TORCH_CHECK_VALUE(K <= kMaxK, "K=", K, " exceeds ", kMaxK, ": int32 accumulation of 8-bit products could overflow");
  check_vector(x_scale_in, "x_scale", at::kFloat, M, true);
  if (x_zero_in) check_vector(*x_zero_in, "x_zero", at::kFloat, M, true);
  check_tensor(w_q_in, "w_q", at::kChar, 2);
  TORCH_CHECK_VALUE(w_q_in.size(1) == K, "w_q must have ", K, " columns to match the activations, got shape ",
                    w_q_in.sizes());
  const int64_t N = w_q_in.size(0);
  check_vector(w_scale_in, "w_scale", at::kFloat, N, false);
  check_vector(w_zero_in, "w_zero", at::kFloat, N, false);
  check_vector(w_sum_in, "w_sum", at::kInt, N, false);
  check_bias(bias_in, N);

  const at::Tensor x_q = x_q_in.contiguous(), w_q = w_q_in.contiguous(), x_scale = x_scale_in.contiguous();
  const at::Tensor x_zero = x_zero_in ? x_zero_in->contiguous() : at::Tensor();
  const at::Tensor w_scale = w_scale_in.contiguous(), w_zero = w_zero_in.contiguous(), w_sum = w_sum_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor out = new_buffer({M, N}, at::kFloat);
  if (M == 0 || N == 0) return out;

  const Kernels& kr = kernels();
  const bool int_mm = use_int_mm(kr, M, K);
  at::Tensor rx = new_buffer({M}, at::kInt);
  at::Tensor xbuf;  // our kernels' activation layout, or the signed operand of torch._int_mm
  if (int_mm) {
    xbuf = x_signed ? x_q : new_buffer({M, K}, at::kChar);
    at::parallel_for(0, M, grain_for(K * 8), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) rx.data_ptr<int32_t>()[r] = signed_codes(x_q, x_signed, r, xbuf);
    });
  } else {
    xbuf = new_buffer({M * kr.int8_prep_stride(K)}, at::kByte);
    at::parallel_for(0, M, grain_for(K * 8), [&](int64_t r0, int64_t r1) {
      kr.int8_prep(x_q.data_ptr(), x_signed, K, r0, r1, xbuf.data_ptr<uint8_t>(), rx.data_ptr<int32_t>());
    });
  }
  fq_cpu::Int8Epilogue ep{x_scale.data_ptr<float>(), x_scale.size(0) == 1 ? 0 : 1,
                          x_zero.defined() ? x_zero.data_ptr<float>() : &kZero,
                          x_zero.defined() && x_zero.size(0) != 1 ? 1 : 0,
                          rx.data_ptr<int32_t>(), w_scale.data_ptr<float>(), w_zero.data_ptr<float>(),
                          w_sum.data_ptr<int32_t>(), bias.defined() ? bias.data_ptr<float>() : nullptr,
                          static_cast<float>(K)};
  if (int_mm) {
    int_mm_into(kr, xbuf, w_q, !x_signed, ep, out);
    return out;
  }
  constexpr int64_t kBlock = 48;  // a multiple of every path's register tile and panel width
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, grain_for(M * kBlock * K), [&](int64_t b0, int64_t b1) {
    kr.int8_gemm(xbuf.data_ptr<uint8_t>(), x_signed, M, K, w_q.data_ptr<int8_t>(), b0 * kBlock,
                 std::min(N, b1 * kBlock), ep, out.data_ptr<float>(), N);
  });
  return out;
}

at::Tensor int8_linear_cpu(const at::Tensor& x_q, const at::Tensor& x_scale, const at::Tensor& x_zero,
                           const at::Tensor& w_q, const at::Tensor& w_scale, const at::Tensor& w_zero,
                           const at::Tensor& w_sum, const c10::optional<at::Tensor>& bias) {
  return int8_linear_impl(x_q, false, x_scale, &x_zero, w_q, w_scale, w_zero, w_sum, bias);
}

at::Tensor int8_linear_symmetric_cpu(const at::Tensor& x_q, const at::Tensor& x_scale, const at::Tensor& w_q,
                                     const at::Tensor& w_scale, const at::Tensor& w_zero, const at::Tensor& w_sum,
                                     const c10::optional<at::Tensor>& bias) {
  return int8_linear_impl(x_q, true, x_scale, nullptr, w_q, w_scale, w_zero, w_sum, bias);
}

// ------------------------------------------------------------------------------------------------ binary

at::Tensor pack_signs_cpu(const at::Tensor& x_in) {
  TORCH_CHECK_TYPE(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kBool,
                   "pack_signs expects a float or bool tensor, got ", x_in.scalar_type());
  TORCH_CHECK_VALUE(x_in.dim() == 2, "x must be 2-D, got shape ", x_in.sizes());
  const at::Tensor x = x_in.contiguous();
  const int64_t M = x.size(0), K = x.size(1), KW = (K + 31) / 32;
  at::Tensor out = new_buffer({M, KW}, at::kInt);
  const bool is_bool = x.scalar_type() == at::kBool;
  at::parallel_for(0, M, grain_for(K), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      uint32_t* o = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()) + r * KW;
      for (int64_t w = 0; w < KW; ++w) {
        uint32_t word = 0;
        const int64_t end = std::min<int64_t>(32, K - 32 * w);
        if (is_bool) {
          const bool* src = x.data_ptr<bool>() + r * K + 32 * w;
          for (int64_t j = 0; j < end; ++j) word |= uint32_t(src[j]) << j;
        } else {
          const float* src = x.data_ptr<float>() + r * K + 32 * w;
          for (int64_t j = 0; j < end; ++j) word |= uint32_t(src[j] > 0.f) << j;
        }
        o[w] = word;
      }
    }
  });
  return out;
}

at::Tensor binary_linear_w1a8_cpu(const at::Tensor& x_q_in, const at::Tensor& x_scale_in, const at::Tensor& w_bits_in,
                                  const at::Tensor& w_scale_in, const c10::optional<at::Tensor>& bias_in, int64_t K,
                                  int64_t planes) {
  check_tensor(x_q_in, "x_q", at::kChar, 2);
  const int64_t M = x_q_in.size(0), KW = (K + 31) / 32;
  TORCH_CHECK_VALUE(x_q_in.size(1) == K, "K=", K, " does not match x_q with ", x_q_in.size(1), " columns");
  TORCH_CHECK_VALUE(K <= kMaxK, "K=", K, " exceeds ", kMaxK, ": int32 accumulation of 8-bit products could overflow");
  check_vector(x_scale_in, "x_scale", at::kFloat, M, true);
  check_tensor(w_bits_in, "w_bits", at::kInt, 2);
  TORCH_CHECK_VALUE(w_bits_in.size(1) == KW, "w_bits must have ", KW, " columns to match the activations, got shape ",
                    w_bits_in.sizes());
  TORCH_CHECK_VALUE(planes == 1 || planes == 2, "planes must be 1 or 2, got ", planes);
  TORCH_CHECK_VALUE(w_bits_in.size(0) % planes == 0, "w_bits must have planes * N rows for planes=", planes,
                    ", got shape ", w_bits_in.sizes());
  const int64_t N = w_bits_in.size(0) / planes;
  check_vector(w_scale_in, "w_scale", at::kFloat, N, false);
  check_bias(bias_in, N);
  const at::Tensor x_q = x_q_in.contiguous(), x_scale = x_scale_in.contiguous(), w_bits = w_bits_in.contiguous();
  const at::Tensor w_scale = w_scale_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  check_padding(w_bits, K, "w_bits");
  at::Tensor out = new_buffer({M, N}, at::kFloat);
  if (M == 0 || N == 0) return out;

  const Kernels& kr = kernels();
  const int32_t* bits = w_bits.data_ptr<int32_t>();
  if (use_int_mm(kr, M, K)) {  // the signs as int8 weights, then an int8 GEMM
    at::Tensor w = new_buffer({N, K}, at::kChar);
    at::parallel_for(0, N, grain_for(K), [&](int64_t r0, int64_t r1) {
      kr.expand_signs(reinterpret_cast<const uint32_t*>(bits),
                      planes == 2 ? reinterpret_cast<const uint32_t*>(bits + N * KW) : nullptr, KW, K, r0, r1,
                      w.data_ptr<int8_t>());
    });
    // The affine epilogue with zero points 0 is (sx * sw) * dot + bias, the W1A8 epilogue.
    const at::Tensor zw = at::zeros({N}, at::kFloat), ws = at::zeros({N}, at::kInt), rx = at::zeros({M}, at::kInt);
    const fq_cpu::Int8Epilogue ep{x_scale.data_ptr<float>(), x_scale.size(0) == 1 ? 0 : 1, &kZero, 0,
                                  rx.data_ptr<int32_t>(), w_scale.data_ptr<float>(), zw.data_ptr<float>(),
                                  ws.data_ptr<int32_t>(), bias.defined() ? bias.data_ptr<float>() : nullptr,
                                  static_cast<float>(K)};
    int_mm_into(kr, x_q, w, false, ep, out);
    return out;
  }
  const int64_t stride = kr.w1a8_prep_stride(K);
  at::Tensor xbuf = new_buffer({M * stride}, at::kByte);
  at::Tensor xsum = new_buffer({M}, at::kInt);
  at::parallel_for(0, M, grain_for(K * 8), [&](int64_t r0, int64_t r1) {
    kr.w1a8_prep(x_q.data_ptr<int8_t>(), K, r0, r1, xbuf.data_ptr<uint8_t>(), xsum.data_ptr<int32_t>());
  });
  fq_cpu::ScaleEpilogue ep{x_scale.data_ptr<float>(), x_scale.size(0) == 1 ? 0 : 1, w_scale.data_ptr<float>(),
                           bias.defined() ? bias.data_ptr<float>() : nullptr};
  constexpr int64_t kBlock = 48;  // a multiple of every path's register tile and panel width
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, grain_for(M * kBlock * K), [&](int64_t b0, int64_t b1) {
    kr.w1a8_gemm(xbuf.data_ptr<uint8_t>(), xsum.data_ptr<int32_t>(), M, K, bits, planes == 2 ? bits + N * KW : nullptr,
                 b0 * kBlock, std::min(N, b1 * kBlock), ep, out.data_ptr<float>(), N);
  });
  return out;
}

at::Tensor binary_linear_w1a1_cpu(const at::Tensor& x_bits_in, const at::Tensor& x_scale_in,
                                  const at::Tensor& w_bits_in, const at::Tensor& w_scale_in,
                                  const c10::optional<at::Tensor>& bias_in, int64_t K, bool unsigned_act) {
  check_tensor(x_bits_in, "x_bits", at::kInt, 2);
  const int64_t M = x_bits_in.size(0), KW = (K + 31) / 32;
  TORCH_CHECK_VALUE(K >= 0 && x_bits_in.size(1) == KW, "x_bits must have ceil(K/32) = ", KW,
                    " words per row for K=", K, ", got shape ", x_bits_in.sizes());
  check_vector(x_scale_in, "x_scale", at::kFloat, M, true);
  check_tensor(w_bits_in, "w_bits", at::kInt, 2);
  TORCH_CHECK_VALUE(w_bits_in.size(1) == KW, "w_bits must have ", KW, " columns to match the activations, got shape ",
                    w_bits_in.sizes());
  const int64_t N = w_bits_in.size(0);
  check_vector(w_scale_in, "w_scale", at::kFloat, N, false);
  check_bias(bias_in, N);
  const at::Tensor x_bits = x_bits_in.contiguous(), x_scale = x_scale_in.contiguous(), w_bits = w_bits_in.contiguous();
  const at::Tensor w_scale = w_scale_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  check_padding(x_bits, K, "x_bits");
  check_padding(w_bits, K, "w_bits");
  at::Tensor out = new_buffer({M, N}, at::kFloat);
  if (M == 0 || N == 0) return out;

  at::Tensor xpop = new_buffer({M}, at::kInt);
  const uint32_t* xb = reinterpret_cast<const uint32_t*>(x_bits.data_ptr<int32_t>());
  for (int64_t m = 0; m < M; ++m) {
    int32_t p = 0;
    for (int64_t w = 0; w < KW; ++w) p += __builtin_popcount(xb[m * KW + w]);
    xpop.data_ptr<int32_t>()[m] = p;
  }
  fq_cpu::ScaleEpilogue ep{x_scale.data_ptr<float>(), x_scale.size(0) == 1 ? 0 : 1, w_scale.data_ptr<float>(),
                           bias.defined() ? bias.data_ptr<float>() : nullptr};
  const Kernels& kr = kernels();
  constexpr int64_t kBlock = 12;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, grain_for(M * kBlock * KW), [&](int64_t b0, int64_t b1) {
    kr.w1a1_gemm(x_bits.data_ptr<int32_t>(), M, KW, K, w_bits.data_ptr<int32_t>(), b0 * kBlock,
                 std::min(N, b1 * kBlock), unsigned_act, xpop.data_ptr<int32_t>(), ep, out.data_ptr<float>(), N);
  });
  return out;
}

}  // namespace

// The schemas are repeated in fq_plugin/ops/__init__.py (SCHEMAS) for the build without the extension; a test
// checks that both agree.
TORCH_LIBRARY(fq_plugin, m) {
  m.def("quantize_affine_u8(Tensor x, Tensor x_min, Tensor x_max, int bits=8) -> Tensor");
  m.def("quantize_absmax_i8(Tensor x) -> (Tensor, Tensor)");
  m.def("fake_quantize_affine(Tensor x, Tensor x_min, Tensor scale, int bits=8) -> Tensor");
  m.def("int8_linear(Tensor x_q, Tensor x_scale, Tensor x_zero, Tensor w_q, Tensor w_scale, Tensor w_zero, "
        "Tensor w_sum, Tensor? bias=None) -> Tensor");
  m.def("int8_linear_symmetric(Tensor x_q, Tensor x_scale, Tensor w_q, Tensor w_scale, Tensor w_zero, "
        "Tensor w_sum, Tensor? bias=None) -> Tensor");
  m.def("pack_signs(Tensor x) -> Tensor");
  m.def("binary_linear_w1a8(Tensor x_q, Tensor x_scale, Tensor w_bits, Tensor w_scale, Tensor? bias, int K, "
        "int planes=1) -> Tensor");
  m.def("binary_linear_w1a1(Tensor x_bits, Tensor x_scale, Tensor w_bits, Tensor w_scale, Tensor? bias, int K, "
        "bool unsigned_act=False) -> Tensor");
  m.def("quantized_softmax(Tensor scores, Tensor mask, Tensor? num_grid, Tensor? den_grid, Tensor? out_grid, "
        "int bits=8) -> Tensor");
  m.def("quantized_attention(Tensor q, Tensor k, Tensor v, Tensor mask, int heads, Tensor? kv_grid, "
        "Tensor? num_grid, Tensor? den_grid, Tensor? out_grid, int bits=8, Tensor? key_rows=None) -> (Tensor, Tensor)");
  m.def("quantized_layer_norm(Tensor x, Tensor weight, Tensor bias, float eps, Tensor? num_grid, Tensor? den_grid, "
        "Tensor? quot_grid, Tensor? out_grid, int bits=8) -> Tensor");
}

TORCH_LIBRARY_IMPL(fq_plugin, CPU, m) {
  m.impl("quantize_affine_u8", &quantize_affine_u8_cpu);
  m.impl("quantize_absmax_i8", &quantize_absmax_i8_cpu);
  m.impl("fake_quantize_affine", &fake_quantize_affine_cpu);
  m.impl("int8_linear", &int8_linear_cpu);
  m.impl("int8_linear_symmetric", &int8_linear_symmetric_cpu);
  m.impl("pack_signs", &pack_signs_cpu);
  m.impl("binary_linear_w1a8", &binary_linear_w1a8_cpu);
  m.impl("binary_linear_w1a1", &binary_linear_w1a1_cpu);
  m.impl("quantized_softmax", &quantized_softmax_cpu);
  m.impl("quantized_attention", &quantized_attention_cpu);
  m.impl("quantized_layer_norm", &quantized_layer_norm_cpu);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fq_plugin low-bit kernels (ops are registered under torch.ops.fq_plugin)";
  m.def("set_cpu_isa", &set_cpu_isa, "Select a CPU path: auto, portable, avx2, avx512-vnni (alias avx512)");
  m.def("cpu_isa", [] { return std::string(kernels().name); }, "Name of the selected CPU path");
  m.def("supported_cpu_isas", &supported_cpu_isas, "CPU paths this machine can run, most portable first");
  m.def("set_int8_gemm", &set_int8_gemm, "Who multiplies int8 matrices on the CPU: auto, kernels, int_mm");
  m.def("int8_gemm", [] { return std::string(kInt8GemmNames[g_int8_gemm.load()]); }, "The int8 GEMM setting");
  m.def("has_cuda", [] {
#if defined(FQ_WITH_CUDA)
    return true;
#else
    return false;
#endif
  }, "Whether CUDA kernels were built");
  m.def("_set_debug_poison", [](int byte) { g_poison.store(byte); },
        "Test hook: fill new outputs and scratch buffers with this byte (-1: off)");
}
