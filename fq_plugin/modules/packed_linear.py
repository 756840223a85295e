"""Layers of packed checkpoints (``fq-pack``): integer or bit weights, run by the ``fq_plugin.ops`` kernels.

Each packed layer replaces a fake-quantized layer of the same model and computes the same function from
the same integer codes, so a packed checkpoint translates like the QAT checkpoint it came from:

* ``PackedInt8Linear`` (from ``QuantLinear``): k-bit affine codes per output row, stored one per byte.
  When its input is the output of a single-range affine quantizer (linked by the model), the input codes
  are recovered exactly and the int8 GEMM runs; otherwise the weight is dequantized once and ``F.linear``
  runs (exact, no speed-up).
* ``PackedBinaryLinear`` (from ``BinaryLinear``): one or two planes of sign bits (binary, split binary,
  ternary) with a scale per row; 1-bit x 8-bit or 1-bit x 1-bit kernels for quantized inputs, the
  dequantized weight for float inputs.
* ``PackedEmbedding`` (from ``QuantEmbedding``): 8-bit rows dequantized on lookup.

The ``pack_*`` functions turn a trained weight into these tensors; they define the file format.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..quant import WeightQuantizer, valid_positions
from ..quant.inference_cache import InferenceCache
from ..quant.affine import affine_scale
from ..quant.binary_quantizers import ElasticBinaryQuantizer, TokenQuantizer
from .quant_config import run_fused

INT8_OFFSET = 128  # the int8 GEMM takes signed weight codes: c - 128, with the zero point moved by 128 steps


def pack_int8_weight(weight: torch.Tensor, quantizer: WeightQuantizer) -> dict:
    """Codes of a weight fake-quantized by ``quantizer`` (per row or per tensor).

    Returns:
        ``weight_codes`` uint8 [N, K], ``weight_scale``/``weight_min`` float32 [N] with
        ``dequantized = weight_min + weight_codes * weight_scale`` per row, bit for bit the fake-quantized weight.
    """
    w = weight.detach().float()
    lo, hi = quantizer.ranges(w)
    lo = lo.reshape(-1).expand(w.shape[0]).contiguous()
    hi = hi.reshape(-1).expand(w.shape[0]).contiguous()
    return {"weight_codes": ops.quantize_affine_u8(w, lo, hi, quantizer.bits),
            "weight_scale": affine_scale(lo, hi, quantizer.bits), "weight_min": lo}


def linear_rows(x, weight, bias=None):
    """``F.linear`` on ``x`` flattened to rows. torch runs some 3-D inputs (one decoding step's B x 1 x C view of a
    T x B x C tensor: a size-1 dim with an unusual stride) as a batched product that re-reads the weight for every
    row, two orders of magnitude slower for a vocabulary projection."""
    if x.dim() <= 2:
        return F.linear(x, weight, bias)
    return F.linear(x.reshape(-1, x.shape[-1]), weight, bias).view(x.shape[:-1] + (weight.shape[0],))


def _register_codes(module, rows, cols):
    module.register_buffer("weight_codes", torch.zeros(rows, cols, dtype=torch.uint8))
    module.register_buffer("weight_scale", torch.ones(rows))
    module.register_buffer("weight_min", torch.zeros(rows))


def _dequantize_rows(codes, scale, minimum):
    """``minimum + codes * scale`` row by row, the same float operation as the fake quantizer's."""
    return torch.addcmul(minimum.unsqueeze(-1), codes.float(), scale.unsqueeze(-1))


def _row_magnitude(w: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    """The one magnitude per row of the entries in ``mask``. Straight-through binarizers return
    ``w + (q - w)``, which is ``q`` up to a rounding error, hence the tolerance."""
    count = mask.sum(dim=1).clamp(min=1)
    magnitude = ((w.abs() * mask).double().sum(dim=1) / count).float()  # float64: see binarize._mean
    if ((w.abs() - magnitude[:, None]).abs() * mask > 1e-5 * magnitude[:, None] + 1e-30).any():
        raise ValueError(f"a {what} weight has more than one magnitude in a row")
    return magnitude


def binary_planes(quantizer, weight, split=None):
    """What ``pack_binary_weight`` packs for a weight (and its split plane) binarized by ``quantizer``."""
    if quantizer.mode == "ternary":
        return ("ternary", quantizer(weight.float()))
    return [quantizer(w.float()) for w in (weight, split) if w is not None]


def pack_binary_weight(planes) -> dict:
    """Bit planes of binarized weights (each [N, K] holding +-s_n per row) or of one ternary weight.

    Args:
        planes: list of dequantized weights: one binary plane, two binary planes (split binary) whose
            sum is the weight, or one ternary weight ({-a, 0, a} per row) given as ``("ternary", w)``.
    Returns:
        ``weight_bits`` int32 [P * N, ceil(K / 32)] and ``weight_scale`` float32 [P * N]; the weight is the
        sum over planes p of ``weight_scale[p N + n] * (+1 if bit else -1)``.
    Raises:
        ValueError: a plane has more than one magnitude in a row (it is not binary or ternary).
    """
    if isinstance(planes, tuple) and planes[0] == "ternary":
        w = planes[1].detach().float()
        alpha = _row_magnitude(w, w != 0, "ternary")
        # t = (s1 + s2) / 2 with s1 = sign(t >= 0), s2 = sign(t > 0): two sign planes of scale alpha / 2.
        bits = [ops.pack_signs(w >= 0), ops.pack_signs(w > 0)]
        scales = [alpha / 2] * 2
    else:
        bits, scales = [], []
        for plane in planes:
            w = plane.detach().float()
            bits.append(ops.pack_signs(w > 0))
            scales.append(_row_magnitude(w, torch.ones_like(w, dtype=torch.bool), "binarized"))
    return {"weight_bits": torch.cat(bits), "weight_scale": torch.cat(scales)}


class _PackedLayer(InferenceCache, nn.Module):
    """What both packed linear layers share: filling the buffers from ``pack_*`` output. Tensors derived from the
    buffers are kept by ``InferenceCache`` (rebuilt when a state dict is loaded into them)."""

    def _fill(self, tensors, bias):
        for name, tensor in tensors.items():
            setattr(self, name, tensor)
        if bias is not None:
            self.bias = nn.Parameter(bias.detach(), requires_grad=False)
        return self


class PackedInt8Linear(_PackedLayer):
    """Linear layer with k-bit affine weight codes per row (see the module docstring).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        output_quantizer, token_quantizer: those of the ``QuantLinear`` it replaces (kept as they are); with an
            enabled ``token_quantizer`` the input is quantized per token and the symmetric int8 GEMM runs.
    Attributes:
        input_quantizer: the quantizer whose output this layer reads, set by the model (not saved); the int8
            GEMM runs when it is a calibrated single-range affine quantizer.
    """

    def __init__(self, in_features, out_features, bias=True, output_quantizer=None, token_quantizer=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        _register_codes(self, out_features, in_features)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.output_quantizer = output_quantizer
        self.token_quantizer = token_quantizer
        self.input_quantizer = None

    @classmethod
    def from_codes(cls, tensors, bias=None, token_quantizer=None):
        """A layer holding the ``pack_int8_weight`` tensors ``tensors``, ``bias`` and ``token_quantizer``."""
        out_features, in_features = tensors["weight_codes"].shape
        layer = cls(in_features, out_features, bias=bias is not None, token_quantizer=token_quantizer)
        return layer._fill(tensors, bias)

    def _input_grid(self):
        """``(x_min, x_max, x_scale, bits)`` of the linked input quantizer, or None (float path): the quantizer's
        own cached grid, so calibration that moves its ranges between validations is seen here too."""
        q = self.input_quantizer
        if q is None or not q._enabled or q.num_buckets != 1:
            return None
        frozen = q._frozen_grid(None, (-1,))
        return None if frozen is None else (q.x_min, q.x_max, frozen[1], q.bits)

    def dense_weight(self):
        """The dequantized float weight (cached): what the fake-quantized model multiplied with."""
        return self.inference_cached("dense", (self.weight_codes, self.weight_scale, self.weight_min),
                                     lambda: _dequantize_rows(self.weight_codes, self.weight_scale, self.weight_min))

    def _kernel_weight(self):
        """Signed codes, zero points and code sums of the int8 GEMM (cached)."""
        def build():
            signed = (self.weight_codes.to(torch.int16) - INT8_OFFSET).to(torch.int8)
            return signed, self.weight_min + INT8_OFFSET * self.weight_scale, signed.sum(dim=1, dtype=torch.int32)
        return self.inference_cached("kernel", (self.weight_codes, self.weight_scale, self.weight_min), build)

    def _per_token_linear(self, x):
        """The product for 8-bit per-token inputs: absmax codes of each row, symmetric int8 GEMM."""
        if torch.isnan(x).any():
            raise FloatingPointError("NaN reached the activation quantizer (absmax8)")
        w_q, w_zero, w_sum = self._kernel_weight()
        codes, scale = torch.ops.fq_plugin.quantize_absmax_i8(x.reshape(-1, self.in_features))
        y = torch.ops.fq_plugin.int8_linear_symmetric(codes, scale, w_q, self.weight_scale, w_zero, w_sum, self.bias)
        return y.view(x.shape[:-1] + (self.out_features,))

    def _int8_plan(self):
        """``(x_min, x_max, x_scale, bits, w_q, w_zero, w_sum)`` of the int8 GEMM on the input's codes, or None."""
        grid = self._input_grid()
        return None if grid is None else grid + self._kernel_weight()

    def _per_token(self):
        return self.token_quantizer is not None and self.token_quantizer._enabled

    def _int8_input_plan(self, x):
        """``_int8_plan`` where ``x`` is multiplied from its codes (float32, no per-token quantizer), else None."""
        return None if self._per_token() or x.dtype != torch.float32 else self.step_cached("int8", self._int8_plan)

    def requantizes(self, quantizer, x):
        """True when this layer's input ``x`` (inference, no gradient) goes to the int8 GEMM as ``quantizer``'s codes:
        fake-quantizing it first is then redundant (the codes of ``quantizer(x)`` are those of ``x``)."""
        return (quantizer is not None and quantizer is self.input_quantizer and not self.training
                and not torch.is_grad_enabled() and self._int8_input_plan(x) is not None)

    def forward(self, x):
        per_token = self._per_token()
        if per_token and x.dtype == torch.float32:
            y = self._per_token_linear(x)
        elif (plan := self._int8_input_plan(x)) is None:  # float (or half) inputs: the dequantized weight
            x = self.token_quantizer(x) if per_token else x
            y = linear_rows(x, self.dense_weight().to(x.dtype), self.bias)
        else:
            x_min, x_max, x_scale, bits, w_q, w_zero, w_sum = plan
            rows = x.reshape(-1, self.in_features)
            codes = run_fused(torch.ops.fq_plugin.quantize_affine_u8, self.input_quantizer.name, rows, x_min, x_max,
                              bits)
            y = torch.ops.fq_plugin.int8_linear(codes, x_scale, x_min, w_q, self.weight_scale, w_zero, w_sum,
                                                self.bias)
            y = y.view(x.shape[:-1] + (self.out_features,))
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, valid_positions(y))
        return y

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class PackedBinaryLinear(_PackedLayer):
    """``OutNorm(sum_p scale_p * sign_p(W) . Q(InNorm(x)) + bias)`` from bit planes (see the module docstring).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        planes: 1 (binary) or 2 (split binary, ternary).
        input_quantizer, input_norm, output_norm: those of the ``BinaryLinear`` it replaces.
    """

    def __init__(self, in_features, out_features, bias=True, planes=1, input_quantizer=None, input_norm=None,
                 output_norm=None):
        super().__init__()
        self.in_features, self.out_features, self.planes = in_features, out_features, planes
        words = ops.words_for(in_features)
        self.register_buffer("weight_bits", torch.zeros(planes * out_features, words, dtype=torch.int32))
        self.register_buffer("weight_scale", torch.zeros(planes * out_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.input_quantizer = input_quantizer
        self.input_norm = input_norm
        self.output_norm = output_norm

    @classmethod
    def from_planes(cls, tensors, in_features, out_features, bias=None, input_quantizer=None):
        """A layer holding the ``pack_binary_weight`` tensors ``tensors``, ``bias`` and ``input_quantizer``."""
        planes = tensors["weight_bits"].shape[0] // out_features
        layer = cls(in_features, out_features, bias=bias is not None, planes=planes, input_quantizer=input_quantizer)
        return layer._fill(tensors, bias)

    def dense_weight(self):
        """The dequantized float weight (cached), for float inputs."""
        def build():
            signs = ops.unpack_signs(self.weight_bits, self.in_features) * self.weight_scale[:, None]
            return signs.view(self.planes, self.out_features, self.in_features).sum(dim=0)
        return self.inference_cached("dense", (self.weight_bits, self.weight_scale), build)

    def _shared_plane_scale(self):
        """The per-row scale of all planes if they share it (binary, ternary; cached), else None (split binary)."""
        if self.planes == 1:
            return self.weight_scale

        def build():
            first, second = self.weight_scale.view(2, self.out_features)
            return first.clone() if torch.equal(first, second) else None
        return self.inference_cached("shared_scale", (self.weight_scale,), build)

    def _binary_linear(self, rows):
        """``rows @ W^T + bias`` by the kernel that matches the input quantizer."""
        q, k = self.input_quantizer, self.in_features
        if isinstance(q, TokenQuantizer) and q.mode == "absmax8":
            codes, scale = torch.ops.fq_plugin.quantize_absmax_i8(rows)
            shared = self._shared_plane_scale()
            if shared is not None:  # the kernel sums the planes of a row in one pass
                return torch.ops.fq_plugin.binary_linear_w1a8(codes, scale, self.weight_bits, shared, self.bias, k,
                                                              self.planes)
            y = torch.ops.fq_plugin.binary_linear_w1a8(codes, scale, self.weight_bits, self.weight_scale, None, k)
        else:  # 1-bit inputs: the quantizer's own +-a / {0, a} values, packed to bits with their scale
            binary = q(rows)
            unsigned = q.unsigned if isinstance(q, ElasticBinaryQuantizer) else q.mode == "binary_unsigned"
            y = torch.ops.fq_plugin.binary_linear_w1a1(torch.ops.fq_plugin.pack_signs(binary),
                                                       binary.abs().amax(dim=1), self.weight_bits,
                                                       self.weight_scale, None, k, unsigned)
        if self.planes > 1:
            y = y.view(-1, self.planes, self.out_features).sum(dim=1)
        return y + self.bias if self.bias is not None else y

    def forward(self, x):
        if self.input_norm is not None:
            x = self.input_norm(x)
        q = self.input_quantizer
        if q is None or not q._enabled or x.dtype != torch.float32:
            y = linear_rows(x, self.dense_weight().to(x.dtype), self.bias)
        else:
            y = self._binary_linear(x.reshape(-1, self.in_features)).view(x.shape[:-1] + (self.out_features,))
        return self.output_norm(y) if self.output_norm is not None else y

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, planes={self.planes}, "
                f"bias={self.bias is not None}")


class PackedEmbedding(nn.Module):
    """Embedding table of 8-bit row codes, dequantized on lookup (exactly the fake-quantized table)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        _register_codes(self, num_embeddings, embedding_dim)

    def forward(self, tokens):
        return _dequantize_rows(self.weight_codes[tokens], self.weight_scale[tokens], self.weight_min[tokens])

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}"
