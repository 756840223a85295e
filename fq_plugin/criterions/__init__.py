"""Criterions (imported explicitly by fq_plugin/__init__.py: fairseq does not auto-import them)."""
from . import qat_label_smoothed_cross_entropy  # noqa: F401
