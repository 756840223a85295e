"""Weight and activation quantizers: range estimation (min/max, EMA), bucketing and fake quantization.

Ranges live in buffers so they are saved in checkpoints and restored on resume.
"""
import warnings

import torch
import torch.distributed as dist
from torch import nn

from .affine import affine_scale, check_bits, fake_quantize, fake_quantize_with_scale
from .inference_cache import InferenceCache


def _reduce_all_but(x: torch.Tensor, dim, op) -> torch.Tensor:
    """Reduce ``x`` with ``op`` (torch.amin/amax) over every dim except ``dim`` (None: over all)."""
    if dim is None:
        return op(x).reshape(1)
    dim = dim % x.dim()
    dims = [d for d in range(x.dim()) if d != dim]
    return op(x, dim=dims) if dims else x


def _check_no_nan(stat: torch.Tensor, name: str):
    if torch.isnan(stat).any():
        raise FloatingPointError(f"NaN reached the quantizer '{name}'; quantization ranges would be poisoned")


class Quantizer(nn.Module):
    """On/off switch shared by all quantizers: a buffer, so it is saved with the checkpoint, mirrored
    in a Python bool so the forward pass does not read a tensor. ``kind`` ('weight' or 'activation') lets
    a schedule switch weights and activations at different updates."""

    def __init__(self):
        super().__init__()
        self.register_buffer("enabled", torch.tensor(False))
        self._enabled = False

    def set_enabled(self, enabled: bool):
        if self._enabled != bool(enabled):
            self._enabled = bool(enabled)
            self.enabled.fill_(self._enabled)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._enabled = bool(self.enabled)


class WeightQuantizer(InferenceCache, Quantizer):
    """Fake-quantizes a weight with its own min/max, one range per output row when bucketed (seed 003 §3.3).

    Args:
        bits: bit width k in [2, 8].
        bucketed: one (s, x_min, x_max) per row (dim 0) instead of one per tensor.
        name: used in error messages.
    """

    kind = "weight"

    def __init__(self, bits: int = 8, bucketed: bool = True, name: str = "weight"):
        super().__init__()
        self.bits = check_bits(bits)
        self.bucketed = bucketed
        self.name = name

    def ranges(self, w: torch.Tensor):
        """Per-row (or per-tensor) ``(x_min, x_max)`` shaped to broadcast against ``w``."""
        if self.bucketed and w.dim() > 1:
            flat = w.detach().reshape(w.shape[0], -1)
            lo, hi = torch.aminmax(flat, dim=1)
            shape = (-1,) + (1,) * (w.dim() - 1)
            return lo.view(shape), hi.view(shape)
        lo, hi = torch.aminmax(w.detach())
        return lo, hi

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self._enabled:
            return w
        if isinstance(w, nn.Parameter) and not (torch.is_grad_enabled() and w.requires_grad):
            return self.inference_cached("weight", (w,), lambda: self._quantize(w))  # inference: kept
        return self._quantize(w)

    def _quantize(self, w):
        lo, hi = self.ranges(w)
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise FloatingPointError(f"weight '{self.name}' holds NaN or Inf; refusing to quantize it")
        return fake_quantize(w, lo, hi, self.bits)

    def quantize_output_rows(self, module, inputs, output):
        """Forward hook: quantize each row (last dim) of a module's output like a weight row,
        e.g. the positional embeddings that are computed, not stored. A batch dim expanded from one row (stride
        0: fairseq's positions of a decoding step, the same for every hypothesis) is quantized once."""
        if output.dim() > 1 and output.size(0) > 1 and output.stride(0) == 0:
            return self.quantize_output_rows(module, inputs, output[:1]).expand_as(output)
        return self(output.reshape(-1, output.shape[-1])).view_as(output)

    def extra_repr(self):
        return f"bits={self.bits}, bucketed={self.bucketed}"


class ActivationQuantizer(InferenceCache, Quantizer):
    """Fake-quantizes an activation with EMA ranges (momentum 0.9) updated in training forward passes.

    Padding positions (``valid`` False) and non-finite values are ignored in the range statistics;
    a NaN input raises ``FloatingPointError``. Buckets with no statistics yet pass values through.
    Under ``torch.distributed`` the batch statistics are reduced over all workers first, so every
    worker holds the same ranges.

    Args:
        num_buckets: number of buckets along ``bucket_dim`` (1 for a single range).
        bits: bit width k in [2, 8].
        bucket_dim: input dimension that indexes the buckets (ignored when ``num_buckets`` is 1).
        unsigned: fix x_min to 0 (ReLU outputs, seed 003 §3.4).
        pass_clamped: never zero the gradient of clamped values (LayerNorm denominator).
        momentum: EMA momentum of the running ranges.
        name: used in messages.
    """

    kind = "activation"
    # Inference of packed checkpoints (set by fq_plugin.models.packed_model): one fused C++ pass,
    # fake_quantize_affine, instead of the ATen ops. Off in QAT models since fq_pruning runs of fairseq-train
    # aborted at process exit on 2026-11-23; the same abort later hit a float pruning run without the op, so the op
    # is probably not the cause (see BENCHMARKS.md), but QAT models were not switched back.
    fused_inference = False

    def __init__(self, num_buckets: int = 1, bits: int = 8, bucket_dim: int = -1, unsigned: bool = False,
                 pass_clamped: bool = False, momentum: float = 0.9, name: str = "activation"):
        super().__init__()
        self.bits = check_bits(bits)
        self.num_buckets = num_buckets
        self.bucket_dim = bucket_dim if num_buckets > 1 else None
        self.unsigned = unsigned
        self.pass_clamped = pass_clamped
        self.momentum = momentum
        self.name = name
        self.register_buffer("x_min", torch.zeros(num_buckets))
        self.register_buffer("x_max", torch.zeros(num_buckets))
        self.register_buffer("initialized", torch.zeros(num_buckets, dtype=torch.bool))
        self.observing = True
        self._warned_uninitialized = False

    def _range_shape(self, x: torch.Tensor):
        if self.bucket_dim is None:
            return (1,) * x.dim()
        shape = [1] * x.dim()
        shape[self.bucket_dim] = self.num_buckets
        return shape

    def _batch_ranges(self, x, valid):
        """Per-bucket (min, max) over the positions where ``valid``; +inf/-inf for buckets with none."""
        per_feature = self.bucket_dim in (-1, x.dim() - 1)
        if (per_feature or self.bucket_dim is None) and (valid is None or valid.shape[-1] == 1):
            # Mask over positions only: select the valid rows, then one pass gives min and max.
            rows = x.reshape(-1, x.shape[-1])
            if valid is not None:
                rows = rows[valid.expand(x.shape[:-1] + (1,)).reshape(-1)]
            if rows.numel() == 0:
                inf = torch.full((self.num_buckets,), float("inf"), device=x.device)
                return inf, -inf
            if per_feature:
                return torch.aminmax(rows, dim=0)
            lo, hi = torch.aminmax(rows)
            return lo.reshape(1), hi.reshape(1)
        if valid is None:
            return _reduce_all_but(x, self.bucket_dim, torch.amin), _reduce_all_but(x, self.bucket_dim, torch.amax)
        valid = valid.expand_as(x)
        return (_reduce_all_but(x.masked_fill(~valid, float("inf")), self.bucket_dim, torch.amin),
                _reduce_all_but(x.masked_fill(~valid, float("-inf")), self.bucket_dim, torch.amax))

    @torch.no_grad()
    def observe(self, x: torch.Tensor, valid=None):
        """Update the running ranges with the statistics of ``x`` (positions where ``valid`` is True)."""
        x = x.detach().float()
        if self.bucket_dim is not None and x.shape[self.bucket_dim] != self.num_buckets:
            raise ValueError(f"quantizer '{self.name}' has {self.num_buckets} buckets but got size "
                             f"{x.shape[self.bucket_dim]} on dim {self.bucket_dim}")
        lo, hi = self._batch_ranges(x, valid)
        _check_no_nan(lo, self.name)
        _check_no_nan(hi, self.name)
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) and torch.isinf(x).any():
            # Rare path: Inf inputs would stretch the range to infinity; keep finite values only.
            finite = torch.isfinite(x) if valid is None else valid & torch.isfinite(x)
            lo, hi = self._batch_ranges(x, finite)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            both = torch.cat([lo, -hi])
            dist.all_reduce(both, op=dist.ReduceOp.MIN)
            lo, hi = both[: lo.numel()], -both[lo.numel():]
        if self.unsigned:
            lo = torch.zeros_like(lo)
        seen = torch.isfinite(lo) & torch.isfinite(hi)  # buckets with at least one valid value
        m = self.momentum
        fresh = seen & ~self.initialized
        running = seen & self.initialized
        self.x_min.copy_(torch.where(fresh, lo, torch.where(running, m * self.x_min + (1 - m) * lo, self.x_min)))
        self.x_max.copy_(torch.where(fresh, hi, torch.where(running, m * self.x_max + (1 - m) * hi, self.x_max)))
        self.initialized |= seen

    def forward(self, x: torch.Tensor, valid=None) -> torch.Tensor:
        """Args: x: activation; valid: bool mask broadcastable to ``x``, True where a value is real
        (not padding). Returns the fake-quantized ``x`` (``x`` itself while disabled)."""
        if not self._enabled:
            return x
        if self.training and self.observing:
            self.observe(x, valid)
        elif self.fused_inference and (fused := self._fused_grid(x)) is not None:
            return self._fake_quantize_fused(x, *fused)
        elif torch.isnan(x).any():
            raise FloatingPointError(f"NaN reached the quantizer '{self.name}'")
        elif not (torch.is_grad_enabled() and x.requires_grad) and x.dtype == torch.float32:
            frozen = self._frozen_grid(x)
            if frozen is not None:
                return fake_quantize_with_scale(x, *frozen, self.bits)
        shape = self._range_shape(x)
        lo, hi = self.x_min.view(shape), self.x_max.view(shape)
        if not self.initialized.all():
            if not self.initialized.any():
                if not self.training and not self._warned_uninitialized:
                    warnings.warn(f"quantizer '{self.name}' has no calibrated range; passing values through")
                    self._warned_uninitialized = True
                return x
            # Buckets without statistics yet pass values through unchanged.
            init = self.initialized.view(shape)
            out = fake_quantize(x, lo, hi, self.bits, self.pass_clamped)
            return torch.where(init, out, x)
        return fake_quantize(x, lo, hi, self.bits, self.pass_clamped)

    def _frozen_grid(self, x, shape=None):
        """``(x_min, scale)`` shaped for ``x`` (or to ``shape``) when every bucket is calibrated, cached while the
        range buffers are unchanged (inference does not recompute the step sizes and checks per call); else None."""
        shape = tuple(shape or self._range_shape(x))

        def build():
            if not bool(self.initialized.all()):
                return None
            return self.x_min.view(shape), affine_scale(self.x_min, self.x_max, self.bits).view(shape)
        return self.inference_cached(("grid", shape), (self.x_min, self.x_max, self.initialized), build)

    def inference_grid(self):
        """float32 ``[2, buckets]``, row 0 x_min and row 1 the step size of each bucket, for the fused inference ops
        (:func:`fq_plugin.ops.quantized_softmax`, ``quantized_layer_norm``); None while a bucket has no calibrated
        range (such a bucket passes values through, which those ops do not do). Cached like ``_frozen_grid``."""
        def build():
            frozen = self._frozen_grid(None, (-1,))
            return None if frozen is None else torch.stack(frozen)
        return self.inference_cached("inference_grid", (self.x_min, self.x_max, self.initialized), build)

    def _fused_grid(self, x):
        """Like ``_frozen_grid`` with 1-D ranges for ``fake_quantize_affine``: only for a contiguous float32 ``x``
        without gradient whose ranges are one per tensor or per last-dim feature; else None."""
        if (x.dtype != torch.float32 or not x.is_contiguous() or (torch.is_grad_enabled() and x.requires_grad)
                or self.bucket_dim not in (None, -1, x.dim() - 1)):
            return None
        return self._frozen_grid(x, (-1,))

    def _fake_quantize_fused(self, x, x_min, scale):
        try:
            return torch.ops.fq_plugin.fake_quantize_affine(x, x_min, scale, self.bits)
        except ValueError as e:
            if "NaN" not in str(e):
                raise
            raise FloatingPointError(f"NaN reached the quantizer '{self.name}'") from e

    def select_buckets(self, keep: torch.Tensor):
        """Keep only the buckets ``keep`` (LongTensor), e.g. the features left after FFN node pruning;
        a single-range quantizer is unchanged."""
        if self.num_buckets == 1:
            return
        keep = torch.as_tensor(keep, dtype=torch.long, device=self.x_min.device)
        for name in ("x_min", "x_max", "initialized"):
            self.register_buffer(name, getattr(self, name)[keep].clone())
        self.num_buckets = keep.numel()

    def extra_repr(self):
        return (f"name={self.name}, bits={self.bits}, buckets={self.num_buckets}, "
                f"unsigned={self.unsigned}, pass_clamped={self.pass_clamped}")
