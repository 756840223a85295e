"""Label-smoothed cross entropy that also drives the quantization schedule (seed 003 §4.3, Tables 2 & 4)."""
from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)


@dataclass
class QATLabelSmoothedCrossEntropyConfig(LabelSmoothedCrossEntropyCriterionConfig):
    quant_start_update: int = field(
        default=0, metadata={"help": "update from which the model is quantized; it trains in float before"})
    quant_calibration_updates: int = field(
        default=0,
        metadata={"help": "post-training quantization: from --quant-start-update on, weights are frozen and "
                          "ranges are calibrated over this many updates (0: quantization-aware training)"})


def unwrap_model(model):
    """The fairseq model inside DDP / proxy wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


class QuantSchedule:
    """What the quantizers do at a given update: off before the start, then on; in post-training mode
    the weights are frozen and ranges are observed only during the calibration updates."""

    def __init__(self, start_update: int, calibration_updates: int):
        if start_update < 0 or calibration_updates < 0:
            raise ValueError("--quant-start-update and --quant-calibration-updates must be >= 0")
        self.start_update = start_update
        self.calibration_updates = calibration_updates

    def enabled(self, num_updates: int) -> bool:
        return num_updates >= self.start_update

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
    quantizers from fairseq's update counter, so stopping and resuming continues the same schedule."""

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 quant_start_update=0, quant_calibration_updates=0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.schedule = QuantSchedule(quant_start_update, quant_calibration_updates)

    def forward(self, model, sample, reduce=True):
        core = unwrap_model(model)
        if not hasattr(core, "set_quantization"):
            raise ValueError(f"--criterion qat_label_smoothed_cross_entropy needs a quantized model "
                             f"(e.g. --arch fq_transformer_wmt_en_de), got {type(core).__name__}")
        step = core.num_updates
        core.set_quantization(self.schedule.enabled(step), observe=self.schedule.observing(step))
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
