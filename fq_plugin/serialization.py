"""Let torch's safe ``weights_only`` loader read fairseq checkpoints (torch >= 2.6).

fairseq's ``checkpoint_utils`` calls ``torch.load`` with torch's default, which is ``weights_only=True``
from torch 2.6 on. Besides tensors and containers, fairseq checkpoints hold one plain Python type that
the safe loader refuses: ``argparse.Namespace`` (the model arguments of legacy, argparse-configured
architectures such as ``transformer`` and ours). We allow exactly that type and never turn the safe
loader off: a checkpoint is an untrusted file and pickle can run code.
"""
import argparse

import torch

FAIRSEQ_CHECKPOINT_TYPES = [argparse.Namespace]


def allow_fairseq_checkpoint_types():
    """Register the types of fairseq checkpoints with ``torch.serialization.add_safe_globals``."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights_only default to satisfy
        add(FAIRSEQ_CHECKPOINT_TYPES)
