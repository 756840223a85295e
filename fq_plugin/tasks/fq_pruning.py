"""``--task fq_pruning``: FFN node pruning of a trained Transformer (seed 003 §4.4, Table 5).

    fairseq-train DATA --user-dir fq_plugin --task fq_pruning --restore-file checkpoints/checkpoint_best.pt \\
        --prune-method adaptive --prune-z 0.025 --prune-updates 300 --save-dir pruned  (+ the training options)

The task runs ``--prune-updates`` updates of training data through the model with every weight frozen: the
model is in eval mode (no dropout, quantizers keep their ranges), there is no backward pass and no optimizer
step. Meanwhile it keeps the running per-node maximum x_max of every FFN ReLU output (before quantization,
padding ignored). At the end of the last of these updates it removes, per encoder layer (and decoder layer
with ``--prune-decoder``), the nodes with x_max < z * sigma (``adaptive``, sigma the std of the layer's x_max)
or a fixed ratio of nodes with the smallest L1 norm / x_max (``l1`` / ``xmax``, the baselines of Table 5).

fairseq then stops by itself (the task sets fairseq's ``max_update`` to the update after the last statistics
update, so no ``--max-update`` is needed; the update counter continues from the restored checkpoint's),
validates the pruned model and saves it without optimizer state (whose shapes would no longer match);
the task copies that checkpoint to ``<save-dir>/checkpoint_pruned.pt``. The new per-layer FFN sizes are in
its ``cfg.model`` (``encoder_ffn_dims``/``decoder_ffn_dims``), so ``fairseq-generate``, ``fairseq-train
--restore-file`` and other tools rebuild the pruned shapes with no extra option (a checkpoint whose FFNs are
smaller than the built model's also shrinks it on load). ``--prune-stats FILE`` saves the statistics, and a later
run with the same file reuses them, e.g. to compare thresholds or methods without collecting them again.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum
from fairseq.file_io import PathManager
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import OmegaConf

from ..models.ffn_pruning import (
    adaptive_prune_mask,
    attach_recorders,
    count_parameters,
    detach_recorders,
    ffn_layers,
    ffn_size,
    fixed_prune_mask,
    l1_scores,
    prune_ffn,
    record_ffn_dims,
)
from ..models.fq_transformer import FQTransformerModel

logger = logging.getLogger(__name__)

PRUNE_METHODS = ("adaptive", "l1", "xmax")
PRUNED_CHECKPOINT = "checkpoint_pruned.pt"


@dataclass
class FQPruningConfig(TranslationConfig):
    prune_method: ChoiceEnum(PRUNE_METHODS) = field(
        default="adaptive",
        metadata={"help": "adaptive: prune nodes with x_max < z*sigma of their layer (seed 003); l1 / xmax: prune "
                          "a fixed --prune-ratio of each layer's nodes with the smallest L1 norm / x_max"})
    prune_z: float = field(default=0.025, metadata={"help": "z of the adaptive threshold z*sigma (0 prunes nothing)"})
    prune_ratio: float = field(
        default=0.0, metadata={"help": "fraction of each layer's FFN nodes removed by --prune-method l1/xmax, in (0, 1)"})
    prune_updates: int = field(
        default=300, metadata={"help": "number of updates (training batches, weights frozen) over which x_max is "
                                       "collected before pruning; training stops after them"})
    prune_decoder: bool = field(default=False, metadata={"help": "prune decoder FFNs too (default: encoder only)"})
    prune_stats: Optional[str] = field(
        default=None,
        metadata={"help": "file of the per-node x_max statistics: written once they are collected; if it exists, "
                          "read instead of collecting them (pruning then happens after one update), e.g. to try "
                          "several thresholds or methods on the same statistics"})


def check_pruning_config(cfg):
    """Fail fast on inconsistent pruning options (raises ValueError)."""
    method = str(cfg.prune_method)
    if method not in PRUNE_METHODS:
        raise ValueError(f"--prune-method must be one of {list(PRUNE_METHODS)}, got '{method}'")
    if cfg.prune_updates < 1:
        raise ValueError(f"--prune-updates must be >= 1, got {cfg.prune_updates}")
    if method == "adaptive":
        if cfg.prune_z < 0:
            raise ValueError(f"--prune-z must be >= 0, got {cfg.prune_z}")
        if cfg.prune_ratio != 0:
            raise ValueError("--prune-ratio is for --prune-method l1/xmax; adaptive pruning sets the ratio of each "
                             "layer itself from --prune-z")
    elif not 0 < cfg.prune_ratio < 1:
        raise ValueError(f"--prune-method {method} needs --prune-ratio in (0, 1), got {cfg.prune_ratio}")


def _unwrap(model):
    """The fairseq model inside DDP / proxy wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def _root_config(task_cfg):
    """fairseq's whole config (the parent of the task's), or None where it cannot be reached."""
    if not OmegaConf.is_config(task_cfg):
        return None
    root = task_cfg._get_parent()
    if root is None or "optimization" not in root or "checkpoint" not in root:
        return None
    return root


def _is_main_worker():
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@register_task("fq_pruning", dataclass=FQPruningConfig)
class FQPruningTask(TranslationTask):
    """Translation task that collects FFN x_max statistics with frozen weights and prunes FFN nodes."""

    def __init__(self, cfg: FQPruningConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.recorders = None
        self.stop_update = None
        self.pruned = False
        self.loaded_xmax = None

    @classmethod
    def setup_task(cls, cfg: FQPruningConfig, **kwargs):
        check_pruning_config(cfg)
        root = _root_config(cfg)
        if root is not None and root.checkpoint.no_save:
            raise ValueError("--task fq_pruning saves the pruned model as a checkpoint; remove --no-save")
        return super().setup_task(cfg, **kwargs)

    def get_batch_iterator(self, *args, **kwargs):
        # No prefetch thread (fairseq's --data-buffer-size): a pruning run stops a few updates after it starts, while
        # that daemon thread may still be collating a batch in torch code; a daemon thread inside C++ frames when the
        # interpreter exits can abort the process ("terminate called without an active exception").
        kwargs["data_buffer_size"] = 0
        return super().get_batch_iterator(*args, **kwargs)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if not isinstance(model, FQTransformerModel) or "encoder" not in ffn_layers(model):
            raise ValueError(f"--task fq_pruning needs a Transformer that records its pruned FFN sizes "
                             f"(--arch fq_transformer* or a model derived from it), got {type(model).__name__}")
        return model

    def _begin(self, core, update_num):
        """First statistics update: wrap the FFN activations and tell fairseq when to stop."""
        self.recorders = attach_recorders(core)
        stats = self.cfg.prune_stats
        if stats and PathManager.exists(stats):
            self.loaded_xmax = self._load_stats(core, stats)
        self.stop_update = update_num + (1 if self.loaded_xmax is not None else self.cfg.prune_updates)
        root = _root_config(self.cfg)
        if root is None:
            logger.warning(f"fq_pruning: cannot reach fairseq's config; pass --max-update {self.stop_update} "
                           "--no-save-optimizer-state so that training stops right after pruning")
        else:
            if root.optimization.max_update and root.optimization.max_update != self.stop_update:
                logger.warning(f"fq_pruning: --max-update {root.optimization.max_update} replaced by "
                               f"{self.stop_update} (the update after --prune-updates {self.cfg.prune_updates})")
            root.optimization.max_update = self.stop_update
        if self.loaded_xmax is None:
            logger.info(f"fq_pruning: collecting FFN x_max over {self.cfg.prune_updates} updates "
                        f"({update_num}..{self.stop_update - 1}) with frozen weights, then pruning "
                        f"({self.cfg.prune_method})")

    def _load_stats(self, core, path):
        """x_max statistics saved by an earlier run (``--prune-stats``), checked against this model's FFNs."""
        with PathManager.open(path, "rb") as f:
            stats = torch.load(f, map_location="cpu")  # weights_only: a dict of lists of tensors
        device = next(core.parameters()).device
        sizes = {side: [ffn_size(layer) for layer in layers] for side, layers in ffn_layers(core).items()}
        found = {side: [x.numel() for x in xs] for side, xs in stats.items()} if isinstance(stats, dict) else None
        if found != sizes:
            raise ValueError(f"--prune-stats {path} holds x_max for FFN sizes {found}, but this model has {sizes}; "
                             "statistics are only valid for the model they were collected on")
        logger.info(f"fq_pruning: read FFN x_max statistics from {path}; pruning after one update")
        return {side: [x.to(device) for x in xs] for side, xs in stats.items()}

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """Forward pass in eval mode without gradient; records x_max. Returns the NLL for logging."""
        core = _unwrap(model)
        if self.recorders is None:
            self._begin(core, update_num)
        model.eval()  # no dropout; quantizers in eval mode do not update their ranges
        core.set_num_updates(update_num)
        active = not ignore_grad and not self.pruned and self.loaded_xmax is None
        recorders = [r for side in self.recorders.values() for r in side]
        for recorder in recorders:
            recorder.active = active
        try:
            with torch.no_grad():
                net_output = core(**sample["net_input"])
                lprobs = core.get_normalized_probs(net_output, log_probs=True)
                target = core.get_targets(sample, net_output)
                nll = F.nll_loss(lprobs.view(-1, lprobs.size(-1)), target.view(-1),
                                 ignore_index=self.tgt_dict.pad(), reduction="sum")
        finally:
            for recorder in recorders:
                recorder.active = False
        if ignore_grad:
            nll = nll * 0
        logging_output = {"loss": nll.data, "nll_loss": nll.data, "ntokens": sample["ntokens"],
                          "nsentences": sample["target"].size(0), "sample_size": sample["ntokens"]}
        return nll, sample["ntokens"], logging_output

    def optimizer_step(self, optimizer, model, update_num):
        """Weights are frozen: no step. After the last statistics update, prune."""
        if not self.pruned and self.stop_update is not None and update_num + 1 >= self.stop_update:
            self.prune(_unwrap(model))

    def valid_step(self, sample, model, criterion):
        # a QAT criterion sets the quantizers from its schedule; keep them as they were loaded
        core = _unwrap(model)
        quantizers = core.quantizers() if hasattr(core, "quantizers") else []
        saved = [(q, q._enabled, getattr(q, "observing", None)) for q in quantizers]
        try:
            return super().valid_step(sample, model, criterion)
        finally:
            for q, enabled, observing in saved:
                q.set_enabled(enabled)
                if observing is not None:
                    q.observing = observing

    def _gather_xmax(self, core):
        """Per side, the list of per-layer x_max tensors, reduced (MAX) over all workers."""
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        layers = ffn_layers(core)
        xmax = {}
        for side, recorders in self.recorders.items():
            xmax[side] = []
            for i, recorder in enumerate(recorders):
                x = recorder.xmax
                if x is None:
                    if not distributed:
                        raise RuntimeError(f"fq_pruning: {side} layer {i} saw no data during the statistics updates")
                    x = torch.zeros(ffn_size(layers[side][i]), device=layers[side][i].fc1.weight.device)
                xmax[side].append(x)
        if distributed:
            flat = torch.cat([x for side in xmax.values() for x in side])
            dist.all_reduce(flat, op=dist.ReduceOp.MAX)
            offset = 0
            for side in xmax.values():
                for i, x in enumerate(side):
                    side[i] = flat[offset: offset + x.numel()]
                    offset += x.numel()
        return xmax

    def prune(self, core):
        """Decide the nodes to remove from the collected x_max, remove them and record the new sizes."""
        if self.loaded_xmax is not None:
            xmax = self.loaded_xmax
        else:
            xmax = self._gather_xmax(core)
            if self.cfg.prune_stats and _is_main_worker():
                with PathManager.open(self.cfg.prune_stats, "wb") as f:
                    torch.save({side: [x.cpu() for x in xs] for side, xs in xmax.items()}, f)
                logger.info(f"fq_pruning: saved the FFN x_max statistics to {self.cfg.prune_stats}")
        detach_recorders(core)
        cfg, method = self.cfg, str(self.cfg.prune_method)
        layers = ffn_layers(core)
        sides = ("encoder", "decoder") if cfg.prune_decoder else ("encoder",)
        plans = {}
        for side, side_layers in layers.items():
            for i, layer in enumerate(side_layers):
                x = xmax[side][i]
                sigma = float(x.float().std(unbiased=False))
                below = int((x < cfg.prune_z * sigma).sum()) if method == "adaptive" else None
                # x_max/sigma at the 5th and 10th percentile: the z that would prune about 5 % / 10 % here
                z5, z10 = (float(q) / sigma if sigma > 0 else 0.0
                           for q in torch.quantile(x.float(), torch.tensor([0.05, 0.1], device=x.device)))
                summary = (f"x_max median {float(x.median()):.4g}, max {float(x.max()):.4g}, sigma {sigma:.4g}, "
                           f"{int((x == 0).sum())} nodes never active, z for 5%/10%: {z5:.3g}/{z10:.3g}")
                if side not in sides:
                    extra = f"; {below} below z*sigma" if below is not None else ""
                    logger.info(f"fq_pruning: {side} layer {i}: {ffn_size(layer)} nodes, not pruned ({summary}{extra})")
                    continue
                if method == "adaptive":
                    mask = adaptive_prune_mask(x, cfg.prune_z)
                elif method == "l1":
                    mask = fixed_prune_mask(l1_scores(layer), cfg.prune_ratio)
                else:
                    mask = fixed_prune_mask(x, cfg.prune_ratio)
                if bool(mask.all()):
                    what = f"--prune-z {cfg.prune_z}" if method == "adaptive" else f"--prune-ratio {cfg.prune_ratio}"
                    raise ValueError(f"fq_pruning: {method} pruning with {what} would remove all {mask.numel()} "
                                     f"FFN nodes of {side} layer {i}; refusing (use a smaller value)")
                plans[(side, i)] = (torch.nonzero(~mask).squeeze(1), summary)
        params_before = count_parameters(core)
        totals = {}
        for (side, i), (keep, summary) in plans.items():
            layer = layers[side][i]
            before = ffn_size(layer)
            prune_ffn(layer, keep)
            after = ffn_size(layer)
            kept, total = totals.get(side, (0, 0))
            totals[side] = (kept + after, total + before)
            logger.info(f"fq_pruning: {side} layer {i}: {before} -> {after} FFN nodes ({before - after} pruned, "
                        f"{100.0 * (before - after) / before:.2f}%; {summary})")
        root = _root_config(cfg)
        record_ffn_dims(core, root.model if root is not None else None)
        for side, (kept, total) in totals.items():
            logger.info(f"fq_pruning: {side}: {total} -> {kept} FFN nodes ({100.0 * (total - kept) / total:.2f}% "
                        f"pruned); FFN sizes {getattr(core.args, side + '_ffn_dims')}")
        params_after = count_parameters(core)
        logger.info(f"fq_pruning: parameters {params_before} -> {params_after} "
                    f"({100.0 * (params_before - params_after) / params_before:.2f}% fewer)")
        if root is not None:
            # the optimizer state of the restored checkpoint has the old shapes: do not save it with the new ones
            root.checkpoint.no_save_optimizer_state = True
        self.pruned = True

    def post_save(self, cp_path, num_updates):
        """After fairseq saved the pruned model, copy it to ``<save-dir>/checkpoint_pruned.pt``."""
        if not self.pruned or not cp_path or not _is_main_worker() or not PathManager.exists(cp_path):
            return
        dest = os.path.join(os.path.dirname(cp_path), PRUNED_CHECKPOINT)
        if os.path.abspath(dest) != os.path.abspath(cp_path):
            PathManager.copy(cp_path, dest, overwrite=True)
        logger.info(f"fq_pruning: saved the pruned model to {dest}")
