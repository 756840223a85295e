"""Let torch's safe ``weights_only`` loader read fairseq checkpoints (torch >= 2.6).

fairseq's ``checkpoint_utils`` calls ``torch.load`` with torch's default, which is ``weights_only=True``
from torch 2.6 on. Besides tensors and containers, fairseq checkpoints hold one plain Python type that
the safe loader refuses: ``argparse.Namespace`` (the model arguments of legacy, argparse-configured
architectures such as ``transformer`` and ours). We allow exactly that type and never turn the safe
loader off: a checkpoint is an untrusted file and pickle can run code.
"""
import argparse
import logging
import os

import torch

FAIRSEQ_CHECKPOINT_TYPES = [argparse.Namespace]


def allow_fairseq_checkpoint_types():
    """Register the types of fairseq checkpoints with ``torch.serialization.add_safe_globals``."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights_only default to satisfy
        add(FAIRSEQ_CHECKPOINT_TYPES)


def model_options(state):
    """The model options of a loaded fairseq checkpoint: a Namespace (legacy models, ours) or a dict."""
    cfg = state.get("cfg")
    model_cfg = cfg.get("model") if cfg is not None else None
    return model_cfg if model_cfg is not None else state.get("args")


def get_option(model_cfg, name, default=None):
    if isinstance(model_cfg, dict):
        return model_cfg.get(name, default)
    return getattr(model_cfg, name, default)


def set_option(model_cfg, name, value):
    if isinstance(model_cfg, dict):
        model_cfg[name] = value
    else:
        setattr(model_cfg, name, value)


def checkpoint_cli_paths(parser, args):
    """Refuse ``OUTPUT == INPUT`` and an existing OUTPUT without ``--force`` (tools never overwrite input)."""
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        parser.error("OUTPUT must differ from INPUT (the input is never overwritten)")
    if os.path.exists(args.output) and not args.force:
        parser.error(f"{args.output} exists; pass --force to overwrite it")


def load_checkpoint_or_exit(parser, path):
    """``torch.load`` with the safe loader; a missing, truncated or foreign file ends the tool with a message."""
    allow_fairseq_checkpoint_types()
    try:
        return torch.load(path, map_location="cpu")  # weights_only (torch's default)
    except FileNotFoundError:
        parser.error(f"no such checkpoint: {path}")
    except Exception as error:  # a truncated or foreign file: say what it is, not a traceback
        parser.error(f"cannot read {path} as a checkpoint: {type(error).__name__}: {error}")


def save_atomically(state, path):
    """Write ``state`` to ``path`` through a temporary file, so an interrupted save leaves no half file."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def checkpoint_tool_main(prog, description, input_help, output_help, transform, argv=None):
    """``main()`` of a tool that rewrites one checkpoint into a new file (fq-pack, fq-split): refuses OUTPUT ==
    INPUT and an existing OUTPUT without ``--force``, loads safely, applies ``transform(state)`` (its
    ``ValueError`` becomes the tool's error message; it returns a line to log) and saves atomically."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help=output_help)
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    checkpoint_cli_paths(parser, args)
    state = load_checkpoint_or_exit(parser, args.input)
    try:
        summary = transform(state)
    except ValueError as error:
        parser.error(str(error))
    save_atomically(state, args.output)
    logging.getLogger(f"fq_plugin.{prog}").info(f"{summary}: {args.output}")
    return 0
