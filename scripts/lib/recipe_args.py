"""Turn a recipe's Hydra YAML (configs/<name>.yaml) into the equivalent fairseq-train command line.

The YAML is the one place of a recipe's hyperparameters: ``fairseq-hydra-train --config-dir configs
--config-name <name>`` runs it directly, and the bash recipes run ``fairseq-train`` with the arguments printed
here, so both train the same model.

    python scripts/lib/recipe_args.py --config-name NAME [--num-gpus N] [--arch-variant tiny]
        [--override key=value ...] [--format lines|shell]

``--format shell`` prints bash assignments (``save_dir``, ``needs``, ``train_args``, ``hydra_cmd``) for eval.
"""
import argparse
import os
import re
import shlex
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

# Config groups whose ``_name`` selects a registered component, and the fairseq-train flag that selects it.
NAMED_GROUPS = {"task": "--task", "model": "--arch", "criterion": "--criterion", "optimizer": "--optimizer",
                "lr_scheduler": "--lr-scheduler", "bpe": "--bpe", "tokenizer": "--tokenizer", "scoring": "--scoring"}
# Keys whose value is a file the training reads and another recipe step writes (dependencies).
INPUT_KEYS = ("checkpoint.finetune_from_model", "checkpoint.restore_file", "criterion.teacher_path")
ARCH_SIZE_SUFFIX = re.compile(r"_(wmt_en_de_big|wmt_en_de|iwslt_de_en|tiny)$")


class RecipeError(ValueError):
    """A recipe option that cannot be honoured (reported as one clear line)."""


def load_config(config_dir, config_name, overrides=()):
    """Compose ``config_dir/config_name.yaml`` with Hydra and apply ``key=value`` overrides (Hydra syntax).

    Returns:
        the resolved config as a plain nested dict (``hydra`` section removed).
    """
    config_dir = Path(config_dir).resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        known = sorted(p.stem for p in config_dir.glob("*.yaml"))
        raise RecipeError(f"no config {config_name!r} in {config_dir} (known: {', '.join(known)})")
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name=config_name)
    OmegaConf.set_struct(cfg, False)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        # Applied after composition so that new keys need no "+" (fairseq-hydra-train knows every key).
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def adapt(cfg, num_gpus=None, arch_variant=None):
    """Apply the recipe variables: GPU count (keeping the effective batch) and architecture size.

    Args:
        cfg: config dict from :func:`load_config` (modified in place).
        num_gpus: 0 = CPU; N > 0 = N GPUs, ``update_freq`` scaled so that max_tokens x update_freq x GPUs stays.
        arch_variant: e.g. ``tiny``: ``<family>_wmt_en_de[_big]`` becomes ``<family>_tiny`` (smoke tests).
    Returns:
        cfg
    """
    if num_gpus is not None:
        dist = cfg.setdefault("distributed_training", {})
        opt = cfg.setdefault("optimization", {})
        world = int(dist.get("distributed_world_size", 1))
        freq = list(opt.get("update_freq", [1]))
        if num_gpus < 0:
            raise RecipeError(f"NUM_GPUS must be >= 0, got {num_gpus}")
        if num_gpus == 0:
            cfg.setdefault("common", {})["cpu"] = True
        else:
            total = world * freq[0]
            if total % num_gpus:
                raise RecipeError(f"NUM_GPUS={num_gpus} does not divide the {total} batches per update of this "
                                  f"recipe (max_tokens x {total}); use a divisor of {total}")
            dist["distributed_world_size"] = num_gpus
            opt["update_freq"] = [total // num_gpus] + freq[1:]
    if arch_variant:
        name = cfg["model"]["_name"]
        cfg["model"]["_name"] = ARCH_SIZE_SUFFIX.sub("", name) + "_" + arch_variant
    return cfg


def _flag(key):
    return "--" + key.replace("_", "-")


def _value(value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def to_train_args(cfg):
    """The fairseq-train arguments equivalent to ``cfg`` (data directory first).

    Booleans become bare flags when true and are left out when false; ``None`` is left out.
    """
    data = cfg.get("task", {}).get("data")
    if not data:
        raise RecipeError("the config has no task.data")
    args = [str(data)]
    for group, section in cfg.items():
        if not isinstance(section, dict):
            raise RecipeError(f"top-level key {group!r} is not a config group")
        for key, value in section.items():
            if key == "_name":
                if group not in NAMED_GROUPS:
                    raise RecipeError(f"{group}._name has no fairseq-train flag")
                args += [NAMED_GROUPS[group], str(value)]
            elif group == "task" and key == "data":
                continue
            elif isinstance(value, dict):
                raise RecipeError(f"nested key {group}.{key} has no fairseq-train flag")
            elif value is None or value is False:
                continue
            elif value is True:
                args.append(_flag(key))
            else:
                args += [_flag(key), _value(value)]
    return args


def inputs(cfg):
    """Files the training reads that another step of the recipe writes (finetune start, teacher)."""
    found = []
    for dotted in INPUT_KEYS:
        group, key = dotted.split(".")
        value = cfg.get(group, {}).get(key)
        if value and not (dotted == "checkpoint.restore_file" and value == "checkpoint_last.pt"):
            found.append(str(value))
    return found


def hydra_overrides(cfg, opts):
    """The fairseq-hydra-train overrides that reproduce what :func:`adapt` changed."""
    extra = []
    if opts.num_gpus == 0:
        extra.append("common.cpu=true")
    elif opts.num_gpus:
        freq = ",".join(str(f) for f in cfg["optimization"]["update_freq"])
        extra += [f"distributed_training.distributed_world_size={opts.num_gpus}", f"optimization.update_freq=[{freq}]"]
    if opts.arch_variant:
        extra.append(f"model._name={cfg['model']['_name']}")
    return extra


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-dir", default=str(Path(__file__).resolve().parents[2] / "configs"))
    parser.add_argument("--config-name", required=True)
    parser.add_argument("--num-gpus", type=int, default=None)
    parser.add_argument("--arch-variant", default=None)
    parser.add_argument("--override", action="append", default=[], help="Hydra-style key=value (repeatable)")
    parser.add_argument("--format", choices=("lines", "shell"), default="lines")
    opts = parser.parse_args(argv)
    try:
        cfg = adapt(load_config(opts.config_dir, opts.config_name, opts.override),
                    num_gpus=opts.num_gpus, arch_variant=opts.arch_variant)
        args = to_train_args(cfg)
    except Exception as err:  # hydra/omegaconf errors too: one line, no traceback
        print(f"error: config {opts.config_name}: {err}", file=sys.stderr)
        return 2
    if opts.format == "lines":
        print("\n".join(args))
        return 0
    hydra = ["fairseq-hydra-train", "--config-dir", os.path.relpath(opts.config_dir), "--config-name",
             opts.config_name, *hydra_overrides(cfg, opts), *opts.override]
    env = [f"{var}={os.environ[var]}" for var in ("WORK_DIR", "DATA_DIR") if var in os.environ]
    print(f"save_dir={shlex.quote(str(cfg['checkpoint']['save_dir']))}")
    print("needs=(" + " ".join(shlex.quote(p) for p in inputs(cfg)) + ")")
    print("train_args=(" + " ".join(shlex.quote(a) for a in args) + ")")
    print("hydra_cmd=" + shlex.quote(" ".join(shlex.quote(a) for a in env + hydra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
