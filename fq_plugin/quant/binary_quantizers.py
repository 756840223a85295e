"""Quantizer modules of the binarized Transformers: the method-specific weight binarizers, per-token
activation quantizers (BMT 1-bit, BitNet 8-bit) and BiT's elastic binary activation with learned scale."""
import warnings

import torch
from torch import nn

from . import binarize
from .quantizers import Quantizer

WEIGHT_MODES = {
    "bmt": binarize.binarize_weight_bmt,                  # AQT +-B/2, B = max|w| per output channel
    "bitnet": lambda w: binarize.binarize_weight_centered(w, per_row=False),  # mean|W| Sign(W - mean W)
    "bit": binarize.binarize_weight_centered,             # the same per output row
    "ternary": binarize.ternarize_weight,                 # TWN per row
    "split_binary": binarize.binarize_weight_l1,          # mean|w| Sign(w) per row (ternary splitting)
}


class BinaryWeightQuantizer(Quantizer):
    """Binarizes (or ternarizes) a weight matrix with the rule named by ``mode`` (see ``WEIGHT_MODES``)."""

    kind = "weight"

    def __init__(self, mode: str):
        super().__init__()
        if mode not in WEIGHT_MODES:
            raise ValueError(f"unknown weight binarizer {mode!r}; choose from {sorted(WEIGHT_MODES)}")
        self.mode = mode

    def forward(self, w):
        if not self._enabled:
            return w
        if not torch.isfinite(w).all():
            raise FloatingPointError(f"a weight holds NaN or Inf; refusing to binarize it ({self.mode})")
        return WEIGHT_MODES[self.mode](w)

    def extra_repr(self):
        return f"mode={self.mode}"


TOKEN_MODES = {
    "absmax8": binarize.quantize_tokens_absmax,   # BitNet: 8-bit per token
    "binary": binarize.binarize_tokens_bmt,       # BMT: +-B/2 per token
    "binary_unsigned": binarize.binarize_unsigned_bmt,  # BMT: {0, 2 mean} per token (ReLU outputs, probabilities)
}


class TokenQuantizer(Quantizer):
    """Stateless activation quantizer with one scale per token (last dim), see ``TOKEN_MODES``."""

    kind = "activation"

    def __init__(self, mode: str):
        super().__init__()
        if mode not in TOKEN_MODES:
            raise ValueError(f"unknown activation quantizer {mode!r}; choose from {sorted(TOKEN_MODES)}")
        self.mode = mode

    def forward(self, x, valid=None):
        if not self._enabled:
            return x
        if torch.isnan(x).any():
            raise FloatingPointError(f"NaN reached the activation quantizer ({self.mode})")
        return TOKEN_MODES[self.mode](x)

    def select_buckets(self, keep):
        """Nothing per feature to keep (FFN pruning protocol)."""

    def extra_repr(self):
        return f"mode={self.mode}"


class ElasticBinaryQuantizer(Quantizer):
    """BiT's elastic binary activation with a learned scale alpha and, optionally, a learned per-feature
    shift b. Signed: {-alpha, alpha}; unsigned: {0, alpha} (attention probabilities, ReLU outputs).

    alpha is initialised from the first batch it quantizes in training (2 mean|x| signed, 4 mean|x|
    unsigned). It is stored as ``alpha / lr_scale`` so that any optimizer moves it ``lr_scale`` times
    faster than the weights: alpha gets its own learning rate without a separate parameter group.

    Args:
        features: size of the last dim (for the shift), or 0 for no shift.
        unsigned: {0, alpha} instead of {-alpha, alpha}.
        lr_scale: learning-rate multiplier of alpha.
    """

    kind = "activation"

    def __init__(self, features: int = 0, unsigned: bool = False, lr_scale: float = 1.0):
        super().__init__()
        if lr_scale <= 0:
            raise ValueError(f"the learning-rate scale of alpha must be > 0, got {lr_scale}")
        self.unsigned = unsigned
        self.lr_scale = lr_scale
        self.alpha_raw = nn.Parameter(torch.tensor(1.0 / lr_scale))
        self.shift = nn.Parameter(torch.zeros(features)) if features else None
        self.register_buffer("initialized", torch.tensor(False))
        self._warned = False

    @property
    def alpha(self):
        return (self.alpha_raw * self.lr_scale).abs().clamp(min=1e-8)

    @torch.no_grad()
    def _initialize(self, x, valid):
        values = x.detach().float() if self.shift is None else (x.detach() + self.shift).float()
        if valid is not None:
            values = values.masked_select(valid.expand_as(values).bool())
        finite = values[torch.isfinite(values)]
        if finite.numel() == 0:
            return
        mean_abs = finite.abs().mean().clamp(min=1e-4)
        self.alpha_raw.fill_(float((4.0 if self.unsigned else 2.0) * mean_abs / self.lr_scale))
        self.initialized.fill_(True)

    def forward(self, x, valid=None):
        if not self._enabled:
            return x
        if torch.isnan(x).any():
            raise FloatingPointError("NaN reached an elastic binary activation")
        if not bool(self.initialized):
            if self.training:
                self._initialize(x, valid)
            elif not self._warned:
                warnings.warn("elastic binary activation used before its scale was initialised")
                self._warned = True
        shift = None if self.shift is None else self.shift.to(x.dtype)
        return binarize.elastic_binarize(x, self.alpha.to(x.dtype), shift, self.unsigned)

    def select_buckets(self, keep):
        """Keep only the shift entries of the features in ``keep`` (FFN pruning protocol)."""
        if self.shift is not None:
            self.shift = nn.Parameter(self.shift.data[keep].clone())

    def extra_repr(self):
        return f"unsigned={self.unsigned}, shift={self.shift is not None}, lr_scale={self.lr_scale}"
