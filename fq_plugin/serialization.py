"""Let torch's safe ``weights_only`` loader read fairseq checkpoints (torch >= 2.6).

fairseq's ``checkpoint_utils`` calls ``torch.load`` with torch's default, which is ``weights_only=True``
from torch 2.6 on; checkpoints hold a few plain Python types besides tensors. We allow exactly those,
and never turn the safe loader off: a checkpoint is an untrusted file and pickle can run code.
"""
import argparse
import collections

import torch

# Types found in fairseq checkpoints: argparse.Namespace ("args" of older/legacy checkpoints),
# ordered/default dicts in optimizer and data-iterator state, numpy scalars in "best" metrics.
_SAFE_TYPES = [argparse.Namespace, collections.OrderedDict, collections.defaultdict]


def _numpy_types():
    try:
        import numpy as np
    except ImportError:
        return []
    types = [np.dtype, type(np.dtype("float64")), type(np.dtype("float32")), type(np.dtype("int64"))]
    core = getattr(np, "_core", None) or getattr(np, "core")
    types.append(core.multiarray.scalar)
    return types


def allow_fairseq_checkpoint_types():
    """Register the types of fairseq checkpoints with ``torch.serialization.add_safe_globals``."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights_only default to satisfy
        add(_SAFE_TYPES + _numpy_types())
