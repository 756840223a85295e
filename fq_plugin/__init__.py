"""fq_plugin: quantized and binarized Transformers for fairseq (``--user-dir fq_plugin``)."""
from .serialization import allow_fairseq_checkpoint_types

allow_fairseq_checkpoint_types()

from . import criterions, models  # noqa: E402,F401  (registers with fairseq)
