"""Label-smoothed cross entropy that also drives the quantization schedule (seed 003 §4.3, Tables 2 & 4; BMT's
staged binarization) and, given a teacher, distils from it (BiT, BinaryBERT)."""
import math
from dataclasses import dataclass, field

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)

from .distillation import Distiller, load_teacher


@dataclass
class QATLabelSmoothedCrossEntropyConfig(LabelSmoothedCrossEntropyCriterionConfig):
    quant_start_update: int = field(
        default=0, metadata={"help": "update from which the model is quantized; it trains in float before"})
    quant_calibration_updates: int = field(
        default=0,
        metadata={"help": "post-training quantization: from --quant-start-update on, weights are frozen and "
                          "ranges are calibrated over this many updates (0: quantization-aware training)"})
    activation_quant_start_update: int = field(
        default=-1, metadata={"help": "update from which activations are quantized too (staged training: float, "
                                      "then quantized weights, then weights and activations); -1: with the weights"})
    teacher_path: str = field(
        default="", metadata={"help": "distil from this checkpoint (any float or quantized model with the same "
                                      "vocabulary); it is frozen and not saved with the student"})
    kd_alpha: float = field(
        default=0.5, metadata={"help": "weight of the distillation loss; the label-smoothed CE gets 1 - alpha"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T of the distillation loss"})
    kd_hidden_weight: float = field(
        default=0.0, metadata={"help": "weight of the MSE between student and teacher last decoder hidden states"})


def unwrap_model(model):
    """The fairseq model inside DDP / proxy wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


class QuantSchedule:
    """What the quantizers do at a given update: off before the start, then on; in post-training mode
    the weights are frozen and ranges are observed only during the calibration updates."""

    def __init__(self, start_update: int, calibration_updates: int, activation_start_update: int = -1):
        if start_update < 0 or calibration_updates < 0:
            raise ValueError("--quant-start-update and --quant-calibration-updates must be >= 0")
        if activation_start_update < -1:
            raise ValueError("--activation-quant-start-update must be >= 0 (or -1: with the weights)")
        self.start_update = start_update
        self.calibration_updates = calibration_updates
        self.activation_start_update = start_update if activation_start_update == -1 else activation_start_update

    def enabled(self, num_updates: int) -> bool:
        return num_updates >= self.start_update

    def activations_enabled(self, num_updates: int) -> bool:
        return num_updates >= self.activation_start_update

    def observing(self, num_updates: int) -> bool:
        return not self.post_training or num_updates < self.start_update + self.calibration_updates

    @property
    def post_training(self) -> bool:
        return self.calibration_updates > 0

    def weights_frozen(self, num_updates: int) -> bool:
        return self.post_training and self.enabled(num_updates)


@register_criterion("qat_label_smoothed_cross_entropy", dataclass=QATLabelSmoothedCrossEntropyConfig)
class QATLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    """Label-smoothed cross entropy for quantized models. Before each forward pass it sets the model's
    quantizers from fairseq's update counter, so stopping and resuming continues the same schedule.
    With ``--teacher-path`` the training loss is ``(1 - alpha) CE + alpha KD [+ w MSE(hidden)]``;
    validation reports the plain CE."""

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 quant_start_update=0, quant_calibration_updates=0, activation_quant_start_update=-1,
                 teacher_path="", kd_alpha=0.5, kd_temperature=1.0, kd_hidden_weight=0.0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.schedule = QuantSchedule(quant_start_update, quant_calibration_updates, activation_quant_start_update)
        self.distiller = None
        if teacher_path:
            if self.schedule.post_training:
                raise ValueError("--teacher-path trains the student; it cannot be combined with post-training "
                                 "quantization (--quant-calibration-updates)")
            self.distiller = Distiller(load_teacher(teacher_path, task), kd_alpha, kd_temperature, kd_hidden_weight)

    def forward(self, model, sample, reduce=True):
        core = unwrap_model(model)
        if not hasattr(core, "set_quantization"):
            raise ValueError(f"--criterion qat_label_smoothed_cross_entropy needs a quantized model "
                             f"(e.g. --arch fq_transformer_wmt_en_de), got {type(core).__name__}")
        step = core.num_updates
        if model.training:  # validation scores the model as the last training step left it (and as it is saved)
            core.set_quantization(self.schedule.enabled(step), observe=self.schedule.observing(step),
                                  activations=self.schedule.activations_enabled(step))
        if self.distiller is not None and model.training:
            return self._distillation_forward(model, sample, reduce)
        if not (model.training and self.schedule.weights_frozen(step)):
            return super().forward(model, sample, reduce)
        # Post-training calibration: no dropout, no gradient; only the quantizers' ranges change.
        model.eval()
        for quantizer in core.quantizers():
            quantizer.train()
        try:
            with torch.no_grad():
                loss, sample_size, logging_output = super().forward(model, sample, reduce)
        finally:
            model.train()
        return loss.detach().requires_grad_(), sample_size, logging_output

    def _distillation_forward(self, model, sample, reduce):
        net_output = model(**sample["net_input"])
        ce_loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        kd_loss, hidden_loss = self.distiller.losses(net_output, sample, self.padding_idx)
        alpha = self.distiller.alpha
        loss = (1 - alpha) * ce_loss + alpha * kd_loss
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {"loss": loss.data, "nll_loss": nll_loss.data, "ce_loss": ce_loss.data,
                          "kd_loss": kd_loss.data, "ntokens": sample["ntokens"],
                          "nsentences": sample["target"].size(0), "sample_size": sample_size}
        if hidden_loss is not None:
            loss = loss + self.distiller.hidden_weight * hidden_loss
            logging_output.update(loss=loss.data, hidden_loss=hidden_loss.data)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for key in ("ce_loss", "kd_loss", "hidden_loss"):
            if sample_size and any(key in log for log in logging_outputs):
                total = sum(log.get(key, 0) for log in logging_outputs)
                metrics.log_scalar(key, total / sample_size / math.log(2), sample_size, round=3)
