"""Knowledge distillation from a frozen teacher checkpoint (BiT's multi-step distillation, BinaryBERT's
fine-tuning after splitting): soft cross-entropy on logits at temperature T and MSE on hidden states."""
import os

import torch
import torch.nn.functional as F
from fairseq import checkpoint_utils


def _embedding_rows(state, prefix):
    weight = state["model"].get(prefix + ".embed_tokens.weight")
    return None if weight is None else weight.shape[0]


def load_teacher(path, task):
    """Load a frozen teacher (any architecture fairseq knows, float or quantized) for ``task``.

    Raises:
        FileNotFoundError / ValueError with a clear message when the file is missing or its vocabulary
        does not match the task's dictionaries.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--teacher-path: no checkpoint at {path}")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)  # weights_only loading
    for side, dictionary in (("encoder", task.source_dictionary), ("decoder", task.target_dictionary)):
        rows = _embedding_rows(state, side)
        if rows is not None and rows != len(dictionary):
            raise ValueError(f"--teacher-path {path}: its {side} vocabulary has {rows} entries but this task's "
                             f"dictionary has {len(dictionary)}; a teacher must share the student's vocabulary")
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([path], task=task, state=state)
    teacher = models[0]
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def soft_cross_entropy(student_logits, teacher_logits, keep, temperature):
    """T^2 * sum over kept positions of -sum_v p_teacher(v) log p_student(v), both at temperature T."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = -(teacher * student).sum(dim=-1)
    return temperature ** 2 * per_token.masked_select(keep).sum()


def hidden_mse(student_hidden, teacher_hidden, keep):
    """Sum over kept positions of the mean squared difference of the decoder's last hidden states
    (fairseq's inner states are T x B x C; ``keep`` is B x T)."""
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"--kd-hidden-weight needs equal hidden sizes; student {tuple(student_hidden.shape)} vs "
                         f"teacher {tuple(teacher_hidden.shape)}")
    per_token = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(dim=-1).t()
    return per_token.masked_select(keep).sum()


class Distiller:
    """Holds the teacher outside the criterion's modules, so it is neither optimized nor saved."""

    def __init__(self, teacher, alpha, temperature, hidden_weight):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"--kd-alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"--kd-temperature must be > 0, got {temperature}")
        if hidden_weight < 0:
            raise ValueError(f"--kd-hidden-weight must be >= 0, got {hidden_weight}")
        self.teacher = teacher
        self.alpha = alpha
        self.temperature = temperature
        self.hidden_weight = hidden_weight

    @torch.no_grad()
    def teacher_output(self, sample, device):
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return self.teacher(**sample["net_input"])

    def losses(self, net_output, sample, padding_idx):
        """``(soft cross-entropy, hidden-state MSE or None)`` of the student's output against the teacher's."""
        logits = net_output[0]
        teacher_out = self.teacher_output(sample, logits.device)
        keep = sample["target"].ne(padding_idx)
        kd = soft_cross_entropy(logits, teacher_out[0], keep, self.temperature)
        hidden = None
        if self.hidden_weight > 0:
            hidden = hidden_mse(net_output[1]["inner_states"][-1], teacher_out[1]["inner_states"][-1], keep)
        return kd, hidden
