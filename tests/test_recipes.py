"""The WMT14 recipes (scripts/wmt14_*/) and their Hydra configs (configs/).

The real download is never run here: a tiny WMT-like corpus is packed into archives with the real names and
layout, served from ARCHIVES_DIR and from a file:// mirror (one download interrupted half-way), and run through
the same scripts: prepare -> train (tiny float, FQT and post-training quantized archs) -> generate -> score.
"""
import os
import re
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

import fq_plugin  # noqa: F401  (allows fairseq checkpoint types in torch.load)

from helpers import BIN, REPO, SRC_WORDS, TGT_WORDS, cli_env, run_cli

PAIRS = {"en_de": ("en", "de"), "en_fr": ("en", "fr")}
STEPS = ("prepare", "train", "prune", "pack", "generate", "score")
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("wmt14_*.yaml"))
# Smoke-test settings: tiny archs, one batch per update, a learning rate that learns the lexicon task quickly.
TINY = {"ARCH_VARIANT": "tiny", "MAX_UPDATE": "100", "BPE_MERGES": "200", "WORKERS": "1", "NUM_GPUS": "0",
        "TRAIN_OVERRIDES_ptq8_base": "optimization.max_update=20",
        "TRAIN_OVERRIDES_fqt8_base": "criterion.quant_start_update=20",  # the YAML's 100 = the whole smoke run
        "TRAIN_OVERRIDES": "optimization.update_freq=[1] dataset.max_tokens=2000 optimization.lr=[0.005] "
                           "lr_scheduler.warmup_updates=50 dataset.num_workers=0 common.log_interval=20"}
GOOD_BLEU = 8.0  # chance is ~1-3 BLEU; 100 tiny updates reach ~15 on this lexicon task (> 60 when learnt)


def _tool_path(tmp_dir=Path(os.environ.get("TMPDIR", "/tmp"))):
    """PATH with the venv first; where fq-report is not installed yet (a checkout not re-installed since the
    console script was added), a two-line launcher of the checkout's ``python -m fq_plugin.report``."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    if (BIN / "fq-report").exists():
        return path
    shim = tmp_dir / f"fq-report-shim-{os.getuid()}"
    shim.mkdir(exist_ok=True)
    launcher = shim / "fq-report"
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {BIN / "python"} -m fq_plugin.report "$@"\n')
    launcher.chmod(0o755)
    return f"{shim}{os.pathsep}{path}"


def recipe(pair, step, *args, env=None, check=True, timeout=900):
    """Run scripts/wmt14_<pair>/<step>.sh with the venv first on PATH; returns the CompletedProcess."""
    path = _tool_path()
    proc = subprocess.run(["bash", str(REPO / "scripts" / f"wmt14_{pair}" / f"{step}.sh"), *args],
                          env=cli_env({"PATH": path, **(env or {})}), capture_output=True, text=True,
                          timeout=timeout, cwd="/")
    if check and proc.returncode != 0:
        raise AssertionError(f"{step}.sh failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train_commands(dry_run_stdout):
    """The argument lists of the fairseq-train commands in a dry-run, keyed by --save-dir's last part."""
    found = {}
    for line in dry_run_stdout.splitlines():
        if "fairseq-train " in line:
            words = shlex.split(line.split("fairseq-train ", 1)[1].split(" 2>&1")[0])
            found[Path(words[words.index("--save-dir") + 1]).name] = words
    return found


def as_flags(words):
    """{flag: value or True} of a fairseq-train argument list (the data directory under '<data>')."""
    flags, i = {"<data>": words[0]}, 1
    while i < len(words):
        assert words[i].startswith("--"), words[i]
        if i + 1 < len(words) and not words[i + 1].startswith("--"):
            flags[words[i]] = words[i + 1]
            i += 2
        else:
            flags[words[i]] = True
            i += 1
    return flags


def yaml_flags(config, work_dir, data_dir, world, update_freq):
    """What fairseq-train must receive for ``config``, computed from the YAML alone (independently of the
    recipe's converter): every key of every group, with the recipe's paths and GPU count substituted."""
    cfg = yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())
    cfg.pop("hydra")
    names = {"task": "--task", "model": "--arch", "criterion": "--criterion", "optimizer": "--optimizer",
             "lr_scheduler": "--lr-scheduler"}
    flags = {}
    for group, section in cfg.items():
        for key, value in section.items():
            if isinstance(value, str):
                value = re.sub(r"\$\{oc\.env:WORK_DIR,[^}]*\}", str(work_dir), value)
                value = re.sub(r"\$\{oc\.env:DATA_DIR,[^}]*\}", str(data_dir), value)
            if key == "_name":
                flags[names[group]] = value
            elif (group, key) == ("task", "data"):
                flags["<data>"] = value
            elif value is True:
                flags["--" + key.replace("_", "-")] = True
            elif value is not False and value is not None:
                value = ",".join(map(str, value)) if isinstance(value, list) else value
                flags["--" + key.replace("_", "-")] = str(value)
    flags["--distributed-world-size"] = str(world)
    flags["--update-freq"] = str(update_freq)
    return flags


def _same_value(a, b):
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


# ------------------------------------------------------------------------------------------------ dry runs


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """The full dry-run of both pairs on 4 GPUs (nothing is run, no directory is made)."""
    out = {}
    for pair in PAIRS:
        work = tmp_path_factory.mktemp(pair) / "work"
        proc = recipe(pair, "run", "--dry-run", env={"WORK_DIR": str(work), "NUM_GPUS": "4"})
        assert not work.exists(), "--dry-run created the work directory"
        out[pair] = (work, proc.stdout)
    return out


@pytest.mark.parametrize("pair", PAIRS)
def test_dry_run_prints_every_step_in_order_and_runs_nothing(pair, dry_runs):
    work, text = dry_runs[pair]
    src, tgt = PAIRS[pair]
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    first = {}
    for pattern in ("curl ", "tar -xf", "normalize", "tokenize -x -a", "learn-joint-bpe", "apply-bpe", "awk",
                    "fairseq-preprocess", "fairseq-train", "fq-split", "--task fq_pruning", "fq-pack",
                    "fairseq-generate", "detokenize", "--tokenize none", "fq-report"):
        hits = [i for i, line in enumerate(lines) if pattern in line]
        assert hits, f"no '{pattern}' command in the dry run"
        first[pattern] = hits[0]
    assert list(first.values()) == sorted(first.values()), first
    n_archives = {"de": 5, "fr": 7}[tgt]
    assert sum(line.count("curl ") for line in lines) == sum(line.count("tar -xf") for line in lines) == n_archives
    assert f"newstest2014-{'deen' if tgt == 'de' else 'fren'}-ref.{tgt}.sgm" in text
    merges = {"de": "32000", "fr": "40000"}[tgt]
    assert f"learn-joint-bpe-and-vocab -s {merges} " in text
    gens = [line for line in lines if "fairseq-generate" in line]
    assert all("--beam 4 --lenpen 0.6" in g and "--remove-bpe" in g for g in gens)
    assert any("packed.pt" in g for g in gens) and any("checkpoint_pruned.pt" in g for g in gens)
    assert ("##AT##-##AT##" in text) == (tgt == "de")  # compound splitting only for German
    assert "fairseq-hydra-train --config-dir configs --config-name" in text


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("step", STEPS)
def test_each_step_script_dry_runs_only_its_step(pair, step, tmp_path):
    env = {"WORK_DIR": str(tmp_path / "w"), "NUM_GPUS": "1", "MODELS": "transformer_base fqt8_base",
           "PRUNE_MODELS": "fqt8_base", "PACK_MODELS": "fqt8_base"}
    text = recipe(pair, step, "--dry-run", env=env).stdout
    marker = {"prepare": "fairseq-preprocess", "train": "--task translation", "prune": "--task fq_pruning",
              "pack": "fq-pack", "generate": "fairseq-generate", "score": "fq-report"}
    for other, command in marker.items():
        assert (command in text) == (other == step), f"{step}.sh --dry-run and '{command}'"
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("pair", PAIRS)
def test_help_documents_steps_and_variables(pair):
    text = recipe(pair, "run", "--help").stdout
    for word in STEPS + ("WORK_DIR", "DATA_DIR", "NUM_GPUS", "ARCHIVES_DIR", "STAGES", "MODELS", "BPE_MERGES",
                         "MAX_UPDATE", "ARCH_VARIANT", "TRAIN_OVERRIDES"):
        assert word in text, word


@pytest.mark.parametrize("pair", PAIRS)
def test_training_commands_match_the_hydra_configs(pair, dry_runs):
    """Every fairseq-train command of the recipe equals its YAML, key by key; 4 GPUs keep the batch of 1 x 8."""
    work, text = dry_runs[pair]
    commands = train_commands(text)
    configs = [c for c in CONFIGS if c.startswith(f"wmt14_{pair}_")]
    assert sorted(commands) == sorted(c[len(f"wmt14_{pair}_"):] for c in configs)
    for config in configs:
        got = as_flags(commands[config[len(f"wmt14_{pair}_"):]])
        want = yaml_flags(config, work, work / "data", world=4, update_freq=2)
        assert set(got) == set(want), (config, set(got) ^ set(want))
        for flag, value in want.items():
            assert _same_value(got[flag], value), (config, flag, got[flag], value)


def test_training_commands_parse_with_fairseq_into_the_yaml_values(dry_runs):
    """fairseq's own parser reads the recipe's command into the values of the YAML (registered archs only)."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models import ARCH_MODEL_REGISTRY

    work, text = dry_runs["en_de"]
    checked = 0
    for name, words in train_commands(text).items():
        cfg_yaml = yaml.safe_load((REPO / "configs" / f"wmt14_en_de_{name}.yaml").read_text())
        if cfg_yaml["model"]["_name"] not in ARCH_MODEL_REGISTRY or cfg_yaml["task"]["_name"] != "translation":
            continue  # parts built in parallel (pruning task) are compared as flags above
        args = options.parse_args_and_arch(options.get_training_parser(), input_args=words)
        cfg = convert_namespace_to_omegaconf(args)
        for group in ("optimization", "dataset", "criterion", "model", "optimizer", "lr_scheduler", "checkpoint"):
            for key, value in cfg_yaml[group].items():
                if key == "_name" or isinstance(value, str) and "${" in value:
                    continue
                if key == "update_freq":
                    value = [2]
                have = getattr(cfg[group], key) if group != "model" else getattr(args, key)
                if key == "adam_betas":
                    have, value = str(have).replace(" ", ""), value
                assert have == value or _same_value(str(have), str(value)), (name, group, key, have, value)
        checked += 1
    assert checked >= 6


def test_bad_settings_fail_with_a_clear_message(tmp_path):
    cases = [({"STAGES": "prepare tran"}, "unknown stage 'tran'"),
             ({"MODELS": "transformer_huge"}, "unknown model 'transformer_huge'"),
             ({"NUM_GPUS": "3", "STAGES": "train", "MODELS": "fqt8_base"}, "NUM_GPUS=3 does not divide"),
             ({"NUM_GPUS": "two"}, "NUM_GPUS must be a number"),
             ({"ARCHIVES_DIR": str(tmp_path / "nowhere")}, "is not a directory"),
             ({"TRAIN_OVERRIDES": "optimization.lr=[", "STAGES": "train", "MODELS": "fqt8_base"}, "error: config")]
    for env, message in cases:
        proc = recipe("en_de", "run", "--dry-run", env={"WORK_DIR": str(tmp_path / "w"), **env}, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (env, proc.stderr[-2000:])
    proc = recipe("en_de", "run", "--frobnicate", check=False)
    assert proc.returncode != 0 and "unknown argument '--frobnicate'" in proc.stderr


def test_offline_download_fails_with_instructions(tmp_path):
    env = {"WORK_DIR": str(tmp_path / "w"), "WMT_URL": "http://127.0.0.1:9", "STAGES": "prepare"}
    proc = recipe("en_de", "prepare", env=env, check=False)
    assert proc.returncode != 0
    assert "could not download http://127.0.0.1:9/wmt13/training-parallel-europarl-v7.tgz" in proc.stderr
    assert "ARCHIVES_DIR" in proc.stderr
    assert not (tmp_path / "w" / "data" / "archives" / "training-parallel-europarl-v7.tgz").exists()


# ------------------------------------------------------------------------------------------ tiny end to end


def _sentences(rng, n, lexicon):
    src, tgt = [], []
    for _ in range(n):
        words = [rng.choice(SRC_WORDS) for _ in range(rng.randint(3, 9))]
        src.append(" ".join(words) + " .")
        tgt.append(" ".join(lexicon[w] for w in words) + " .")
    return src, tgt


def _sgm(lines, kind):
    segs = "\n".join(f'<seg id="{i}">{line}</seg>' for i, line in enumerate(lines, 1))
    return f'<{kind}set setid="newstest2014">\n<doc docid="x">\n{segs}\n</doc>\n</{kind}set>\n'


def write_fake_wmt14_en_de(directory: Path, seed=1):
    """Archives with the names and inner layout of the WMT14 EN-DE ones, holding a tiny lexicon corpus."""
    import random

    rng = random.Random(seed)
    lexicon = dict(zip(SRC_WORDS, rng.sample(TGT_WORDS, len(TGT_WORDS))))
    members = {}
    for name, n in (("training/europarl-v7.de-en", 600), ("commoncrawl.de-en", 400),
                    ("training/news-commentary-v9.de-en", 400)):
        en, de = _sentences(rng, n, lexicon)
        members[name] = {"en": en, "de": de}
    valid_en, valid_de = _sentences(rng, 60, lexicon)
    test_en, test_de = _sentences(rng, 60, lexicon)
    staging = directory / "staging"
    files = {
        "training-parallel-europarl-v7.tgz": {f"training/europarl-v7.de-en.{lang}": members[
            "training/europarl-v7.de-en"][lang] for lang in ("en", "de")},
        "training-parallel-commoncrawl.tgz": {f"commoncrawl.de-en.{lang}": members["commoncrawl.de-en"][lang]
                                              for lang in ("en", "de")},
        "training-parallel-nc-v9.tgz": {f"training/news-commentary-v9.de-en.{lang}": members[
            "training/news-commentary-v9.de-en"][lang] for lang in ("en", "de")},
        "dev.tgz": {"dev/newstest2013.en": valid_en, "dev/newstest2013.de": valid_de},
        "test-full.tgz": {"test-full/newstest2014-deen-src.en.sgm": _sgm(test_en, "src"),
                          "test-full/newstest2014-deen-ref.de.sgm": _sgm(test_de, "ref")},
    }
    out = directory / "archives"
    out.mkdir(parents=True)
    for archive, content in files.items():
        with tarfile.open(out / archive, "w:gz") as tar:
            for member, lines in content.items():
                path = staging / member
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(lines if isinstance(lines, str) else "\n".join(lines) + "\n")
                tar.add(path, arcname=member)
    return out, test_de


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    """prepare -> train (float, FQT, PTQ) -> pack (FQT) -> generate -> score on the fake archives, through the real
    scripts."""
    root = tmp_path_factory.mktemp("wmt_tiny")
    archives, test_de = write_fake_wmt14_en_de(root)
    # Three archives come from ARCHIVES_DIR, two from a file:// mirror; one of those was interrupted half-way.
    local, mirror = root / "local", root / "mirror"
    local.mkdir()
    for name in ("training-parallel-europarl-v7.tgz", "training-parallel-commoncrawl.tgz", "dev.tgz"):
        (local / name).write_bytes((archives / name).read_bytes())
    for sub, name in (("wmt14", "training-parallel-nc-v9.tgz"), ("wmt14", "test-full.tgz")):
        (mirror / sub).mkdir(parents=True, exist_ok=True)
        (mirror / sub / name).write_bytes((archives / name).read_bytes())
    downloads = root / "work" / "data" / "archives"
    downloads.mkdir(parents=True)
    whole = (archives / "test-full.tgz").read_bytes()
    (downloads / "test-full.tgz.part").write_bytes(whole[: len(whole) // 2])
    env = dict(TINY, WORK_DIR=str(root / "work"), ARCHIVES_DIR=str(local), WMT_URL=f"file://{mirror}",
               MODELS="transformer_base fqt8_base ptq8_base", PRUNE_MODELS="", PACK_MODELS="fqt8_base",
               STAGES="prepare train pack generate score")
    proc = recipe("en_de", "run", env=env)
    return root / "work", env, proc, archives, test_de


def test_tiny_recipe_runs_end_to_end(tiny_recipe):
    work, env, proc, archives, test_de = tiny_recipe
    data = work / "data"
    assert (data / "archives" / "test-full.tgz").read_bytes() == (archives / "test-full.tgz").read_bytes()
    assert not list((data / "archives").glob("*.part"))
    assert not (data / "archives" / "dev.tgz").exists()  # taken from ARCHIVES_DIR, not downloaded
    assert (data / "raw" / "train.en").read_text().count("\n") == 1400
    assert (data / "raw" / "test.de").read_text().splitlines() == test_de  # SGML stripped, nothing else
    assert (data / "data-bin" / "dict.en.txt").is_file() and (data / "data-bin" / "test.en-de.en.bin").is_file()
    scores = {}
    for name in ("transformer_base", "fqt8_base", "ptq8_base", "fqt8_base_packed"):
        text = (work / "results" / name / "scores.txt").read_text()
        scores[name] = dict(line.split(" ", 1) for line in text.splitlines())
        assert float(scores[name]["bleu"]) > GOOD_BLEU, (name, text)
        assert float(scores[name]["bleu_tok"]) > GOOD_BLEU, (name, text)
        assert float(scores[name]["tokens_per_s"]) > 0
        ckpt = work / "checkpoints" / name.replace("_packed", "") / (
            "packed.pt" if name.endswith("_packed") else "checkpoint_last.pt")
        assert int(scores[name]["checkpoint_bytes"]) == ckpt.stat().st_size
    assert abs(float(scores["fqt8_base_packed"]["bleu"]) - float(scores["fqt8_base"]["bleu"])) <= 0.1
    fqt = torch.load(work / "checkpoints" / "fqt8_base" / "checkpoint_last.pt", map_location="cpu")
    assert fqt["cfg"]["model"].arch == "fq_transformer_tiny"
    assert fqt["cfg"]["criterion"]["quant_start_update"] == 20  # TRAIN_OVERRIDES_fqt8_base won over the YAML's 100
    assert fqt["cfg"]["criterion"]["label_smoothing"] == 0.1 and fqt["cfg"]["model"].quant_bits == 8
    ptq = torch.load(work / "checkpoints" / "ptq8_base" / "checkpoint_last.pt", map_location="cpu")
    assert ptq["cfg"]["criterion"]["quant_calibration_updates"] == 200
    float_state = torch.load(work / "checkpoints" / "transformer_base" / "checkpoint_last.pt",
                             map_location="cpu")["model"]
    assert all(torch.equal(ptq["model"][k], v) for k, v in float_state.items()), "PTQ changed a weight"
    report = (work / "results" / "report.md").read_text()
    assert all(f"| {name} |" in report for name in scores)
    assert (work / "results" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_work(tiny_recipe):
    work, env, *_ = tiny_recipe
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and "report" not in p.name}
    again = recipe("en_de", "run", env=env)
    assert "fairseq-train " not in again.stderr and "fairseq-generate " not in again.stderr
    assert again.stderr.count("done, skipped") >= 20
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert not changed, changed
    dry = recipe("en_de", "run", "--dry-run", env=env).stdout
    # Left out: idempotent directory creation and read-only length checks of the prepared corpus.
    commands = [line for line in dry.splitlines() if not line.startswith("#") and not line.startswith("test ")
                and not (line.startswith("mkdir -p ") and "&&" not in line)]
    assert commands == [line for line in dry.splitlines() if line.startswith("fq-report")]


def test_missing_dependency_is_reported(tiny_recipe, tmp_path):
    work, env, *_ = tiny_recipe
    env = dict(env, WORK_DIR=str(tmp_path / "w"), DATA_DIR=str(work / "data"), STAGES="train", MODELS="ptq8_base")
    proc = recipe("en_de", "run", env=env, check=False)
    assert proc.returncode != 0 and "ptq8_base needs" in proc.stderr and "transformer_base" in proc.stderr


@pytest.mark.slow  # a second recipe training; the YAML values are compared in the fast tests
def test_fairseq_hydra_train_runs_the_same_training_as_the_script(tiny_recipe, tmp_path):
    """Same YAML, same overrides: fairseq-hydra-train and the recipe's fairseq-train end with equal weights."""
    work, env, *_ = tiny_recipe
    env = dict(env, WORK_DIR=str(tmp_path / "script"), DATA_DIR=str(work / "data"), STAGES="train",
               MODELS="fqt8_base", MAX_UPDATE="8")
    dry = recipe("en_de", "run", "--dry-run", env=env).stdout
    hydra_line = next(line for line in dry.splitlines() if "fairseq-hydra-train" in line)
    hydra_words = shlex.split(hydra_line.split("(same as: ", 1)[1].rstrip(")"))
    recipe("en_de", "run", env=env)
    hydra_env = {k: v for k, v in (w.split("=", 1) for w in hydra_words if re.match(r"^[A-Z_]+=", w))}
    assert hydra_env == {"WORK_DIR": str(tmp_path / "script"), "DATA_DIR": str(work / "data")}
    hydra_args = [w for w in hydra_words if not re.match(r"^[A-Z_]+=", w)][1:]
    hydra_env["WORK_DIR"] = str(tmp_path / "hydra")
    assert all(o in hydra_args for o in TINY["TRAIN_OVERRIDES"].split())
    run_cli("fairseq-hydra-train", *hydra_args, cwd=REPO, env=hydra_env)
    a = torch.load(tmp_path / "script" / "checkpoints" / "fqt8_base" / "checkpoint_last.pt", map_location="cpu")
    b = torch.load(tmp_path / "hydra" / "checkpoints" / "fqt8_base" / "checkpoint_last.pt", map_location="cpu")
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 8
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
