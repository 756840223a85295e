"""Removing feed-forward (FFN) nodes from Transformer layers, and recording the per-layer FFN sizes in the
model options so a pruned checkpoint is rebuilt with its own shapes (seed 003 §4.4).

A node ``i`` of an FFN is row ``i`` of ``fc1`` (weight row, bias entry, any per-feature state of the
activation) and column ``i`` of ``fc2``. Removal goes through a small protocol so every layer type can join:
``fc1.select_output_features(keep)``, ``activation_fn.select_features(keep)`` (only if the activation
holds per-node state), ``fc2.select_input_features(keep)``; plain ``nn.Linear`` layers are sliced here.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from omegaconf import OmegaConf, open_dict
from torch import nn

from ..quant import valid_positions

logger = logging.getLogger(__name__)

SIDES = ("encoder", "decoder")


@dataclass
class FFNDimsConfig(FairseqDataclass):
    """Model options holding the per-layer FFN sizes of a pruned model (written by ``--task fq_pruning``)."""

    encoder_ffn_dims: str = field(
        default="",
        metadata={"help": "comma list of the FFN size of each encoder layer (a pruned model); "
                          "empty: every layer has --encoder-ffn-embed-dim"})
    decoder_ffn_dims: str = field(
        default="",
        metadata={"help": "comma list of the FFN size of each decoder layer (a pruned model); "
                          "empty: every layer has --decoder-ffn-embed-dim"})


def ffn_layers(model) -> Dict[str, List[nn.Module]]:
    """The Transformer layers of ``model`` that have an FFN (``fc1``/``fc2``), by side."""
    layers = {}
    for side in SIDES:
        part = getattr(model, side, None)
        found = [layer for layer in getattr(part, "layers", []) if hasattr(layer, "fc1") and hasattr(layer, "fc2")]
        if found:
            layers[side] = found
    return layers


def ffn_size(layer) -> int:
    """Number of FFN nodes of a layer (output features of ``fc1``; packed layers have no ``weight``)."""
    return layer.fc1.out_features


def parse_ffn_dims(text: Optional[str], num_layers: int, max_dim: int, option: str) -> Optional[List[int]]:
    """Parse a ``--*-ffn-dims`` comma list.

    Args:
        text: the option value ("" or None: not set).
        num_layers: number of layers the list must name.
        max_dim: the full FFN size; every entry must be in [1, max_dim].
        option: option name for error messages.
    Returns:
        the sizes, or None when the option is not set.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        dims = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"{option}: expected a comma list of integers, got '{text}'") from None
    if len(dims) != num_layers:
        raise ValueError(f"{option}: {len(dims)} sizes given for {num_layers} layers ('{text}')")
    bad = [d for d in dims if not 1 <= d <= max_dim]
    if bad:
        raise ValueError(f"{option}: every size must be between 1 and the full FFN size {max_dim}, got {bad}")
    return dims


def format_ffn_dims(dims: List[int]) -> str:
    return ",".join(str(d) for d in dims)


def _new_parameter(old: nn.Parameter, data: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(data.clone(), requires_grad=old.requires_grad)


def _select_output_rows(linear: nn.Linear, keep: torch.Tensor):
    """Slice a plain ``nn.Linear`` to the output features in ``keep``."""
    linear.weight = _new_parameter(linear.weight, linear.weight.detach()[keep])
    if linear.bias is not None:
        linear.bias = _new_parameter(linear.bias, linear.bias.detach()[keep])
    linear.out_features = len(keep)


def _select_input_columns(linear: nn.Linear, keep: torch.Tensor):
    """Slice a plain ``nn.Linear`` to the input features in ``keep``."""
    linear.weight = _new_parameter(linear.weight, linear.weight.detach()[:, keep])
    linear.in_features = len(keep)


def prune_ffn(layer, keep: torch.Tensor):
    """Keep only the FFN nodes ``keep`` of a Transformer layer (in place).

    Args:
        layer: a layer with ``fc1``, ``activation_fn`` and ``fc2``.
        keep: 1-D LongTensor of the node indices to keep, in the order they keep.
    """
    keep = torch.as_tensor(keep, dtype=torch.long, device=layer.fc1.weight.device)
    if keep.dim() != 1 or keep.numel() == 0:
        raise ValueError("prune_ffn: keep must be a non-empty 1-D index tensor (a layer cannot lose every node)")
    size = ffn_size(layer)
    if int(keep.min()) < 0 or int(keep.max()) >= size or len(set(keep.tolist())) != keep.numel():
        raise ValueError(f"prune_ffn: keep must hold distinct node indices in [0, {size})")
    if hasattr(layer.fc1, "select_output_features"):
        layer.fc1.select_output_features(keep)
    else:
        _select_output_rows(layer.fc1, keep)
    if hasattr(layer.activation_fn, "select_features"):
        layer.activation_fn.select_features(keep)
    if hasattr(layer.fc2, "select_input_features"):
        layer.fc2.select_input_features(keep)
    else:
        _select_input_columns(layer.fc2, keep)


def record_ffn_dims(model, args=None):
    """Write the current FFN sizes of ``model`` into its options (``model.args`` and ``args``) as
    ``encoder_ffn_dims``/``decoder_ffn_dims`` so saved checkpoints carry them."""
    for side, layers in ffn_layers(model).items():
        text = format_ffn_dims([ffn_size(layer) for layer in layers])
        for target in {id(a): a for a in (getattr(model, "args", None), args) if a is not None}.values():
            if OmegaConf.is_config(target):  # fairseq-hydra-train: a struct DictConfig
                with open_dict(target):
                    target[f"{side}_ffn_dims"] = text
            else:
                setattr(target, f"{side}_ffn_dims", text)


def shrink_ffns(model, dims: Dict[str, List[int]]):
    """Shrink each layer's FFN to ``dims[side][i]`` nodes by keeping its first nodes (the weights are
    about to be overwritten by a pruned checkpoint's)."""
    layers = ffn_layers(model)
    for side, sizes in dims.items():
        for layer, size in zip(layers.get(side, []), sizes):
            if size < ffn_size(layer):
                prune_ffn(layer, torch.arange(size))


def _match_checkpoint_sizes(model, state_dict, prefix, *unused):
    """Load-state-dict pre-hook: a checkpoint whose FFNs are smaller (a pruned model) shrinks the
    freshly built layers to its sizes first, so ``fairseq-train --restore-file`` needs no size options."""
    dims = {}
    for side, layers in ffn_layers(model).items():
        sizes = []
        for i, layer in enumerate(layers):
            weight = state_dict.get(f"{prefix}{side}.layers.{i}.fc1.weight")
            sizes.append(ffn_size(layer) if weight is None else min(weight.shape[0], ffn_size(layer)))
        if sizes != [ffn_size(layer) for layer in layers]:
            dims[side] = sizes
    if dims:
        logger.info("checkpoint has pruned FFNs: rebuilding with " +
                    ", ".join(f"{side} FFN sizes {format_ffn_dims(sizes)}" for side, sizes in dims.items()))
        shrink_ffns(model, dims)
        record_ffn_dims(model)


def apply_ffn_dims(model, args):
    """Called by ``build_model``: shrink the FFNs to ``--encoder-ffn-dims``/``--decoder-ffn-dims`` and let
    later state-dict loads adapt the sizes to the checkpoint's.

    Args:
        model: a freshly built Transformer model.
        args: its options (namespace).
    Returns:
        the model.
    """
    layers = ffn_layers(model)
    dims = {}
    for side in SIDES:
        if side not in layers:
            continue
        full = getattr(args, f"{side}_ffn_embed_dim", ffn_size(layers[side][0]))
        parsed = parse_ffn_dims(getattr(args, f"{side}_ffn_dims", ""), len(layers[side]), full,
                                f"--{side}-ffn-dims")
        if parsed is not None:
            dims[side] = parsed
    shrink_ffns(model, dims)
    model.register_load_state_dict_pre_hook(_match_checkpoint_sizes)
    return model


class XmaxRecorder(nn.Module):
    """Wraps an activation function; while ``active`` it keeps the running per-node maximum of the
    function's output over real (non-padding) positions. Holds no saved state."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.active = False
        self.xmax = None

    def forward(self, x):
        y = self.fn(x)
        if self.active:
            self.observe(y)
        return y

    @torch.no_grad()
    def observe(self, y: torch.Tensor):
        rows = y.detach().reshape(-1, y.shape[-1]).float()
        valid = valid_positions(y)  # T x B x 1 inside our models' forwards; None without a mask
        if valid is not None:
            rows = rows[valid.expand(y.shape[:-1] + (1,)).reshape(-1)]
        if rows.shape[0] == 0:
            return
        batch_max = rows.amax(dim=0)
        self.xmax = batch_max if self.xmax is None else torch.maximum(self.xmax, batch_max)


def _activation_owner(layer):
    """(module, attribute) that holds the bare activation function of a layer's FFN: inside a wrapper
    that quantizes it (``activation_fn.fn``, so x_max is taken before quantization) or the layer itself."""
    act = layer.activation_fn
    if isinstance(act, nn.Module) and hasattr(act, "fn"):
        return act, "fn"
    return layer, "activation_fn"


def _replace_attr(owner, name, value):
    # a Module attribute registered as a child cannot be overwritten by a plain function: drop it first
    if name in owner._modules:
        del owner._modules[name]
    setattr(owner, name, value)


def attach_recorders(model) -> Dict[str, List[XmaxRecorder]]:
    """Wrap every FFN activation of ``model`` in an ``XmaxRecorder``; returns them by side."""
    recorders = {}
    for side, layers in ffn_layers(model).items():
        recorders[side] = []
        for layer in layers:
            owner, name = _activation_owner(layer)
            recorder = XmaxRecorder(getattr(owner, name))
            _replace_attr(owner, name, recorder)
            recorders[side].append(recorder)
    return recorders


def detach_recorders(model):
    """Undo ``attach_recorders``."""
    for layers in ffn_layers(model).values():
        for layer in layers:
            owner, name = _activation_owner(layer)
            recorder = getattr(owner, name)
            if isinstance(recorder, XmaxRecorder):
                _replace_attr(owner, name, recorder.fn)


def l1_scores(layer) -> torch.Tensor:
    """Per-node L1 norm of the node's weights: its fc1 row and bias plus its fc2 column (the sum that
    fairseq's own ``TransformerEncoderLayerBase._get_fc_rank`` ranks nodes by)."""
    w1, w2 = layer.fc1.weight.detach().float(), layer.fc2.weight.detach().float()
    scores = w1.abs().sum(dim=1) + w2.abs().sum(dim=0)
    if layer.fc1.bias is not None:
        scores = scores + layer.fc1.bias.detach().float().abs()
    return scores


def adaptive_prune_mask(xmax: torch.Tensor, z: float) -> torch.Tensor:
    """Seed 003 §4.4: prune node i if x_max[i] < z * sigma, sigma the std of the layer's x_max values.
    Returns a bool mask, True for nodes to prune."""
    sigma = xmax.float().std(unbiased=False)
    return xmax < z * sigma


def fixed_prune_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune the ``round(ratio * n)`` nodes with the smallest scores (ties: lowest index first).
    Returns a bool mask, True for nodes to prune."""
    count = int(round(ratio * scores.numel()))
    order = torch.sort(scores.float(), stable=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    mask[order[:count]] = True
    return mask


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
