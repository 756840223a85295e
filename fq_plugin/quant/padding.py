"""Which token positions are real (not padding), so range statistics can ignore padding (seed 003 §3.4).

The encoder/decoder set the mask for the duration of their forward pass; quantizers deep inside
fairseq's layers read it instead of having it threaded through every fairseq signature.
"""
import threading
from contextlib import contextmanager

_state = threading.local()


@contextmanager
def token_mask(valid):
    """Make ``valid`` (bool, batch x time, True for real tokens) the current token mask."""
    previous = getattr(_state, "valid", None)
    _state.valid = valid
    try:
        yield
    finally:
        _state.valid = previous


def valid_positions(x, time_major: bool = True):
    """The current token mask shaped to broadcast against ``x`` (T x B x ... or B x T x ...),
    or None when there is none or it does not fit ``x`` (e.g. one step of incremental decoding)."""
    valid = getattr(_state, "valid", None)
    if valid is None or x.dim() < 2:
        return None
    if time_major:
        valid = valid.t()
    if tuple(valid.shape) != tuple(x.shape[:2]):
        return None
    return valid.reshape(tuple(valid.shape) + (1,) * (x.dim() - 2))
