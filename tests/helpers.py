"""Test helpers: tiny synthetic translation data and runners for the real fairseq command lines."""
import contextlib
import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

SRC_WORDS = [f"s{i}" for i in range(40)]
TGT_WORDS = [f"t{i}" for i in range(40)]


def write_lexicon_corpus(directory: Path, n_train=3000, n_valid=100, n_test=100, seed=1):
    """Write train/valid/test .src/.tgt where each source word maps to one target word."""
    rng = random.Random(seed)
    lexicon = dict(zip(SRC_WORDS, rng.sample(TGT_WORDS, len(TGT_WORDS))))
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        src_lines, tgt_lines = [], []
        for _ in range(n):
            words = [rng.choice(SRC_WORDS) for _ in range(rng.randint(3, 10))]
            src_lines.append(" ".join(words))
            tgt_lines.append(" ".join(lexicon[w] for w in words))
        (directory / f"{split}.src").write_text("\n".join(src_lines) + "\n")
        (directory / f"{split}.tgt").write_text("\n".join(tgt_lines) + "\n")
    return directory


def preprocess(raw: Path, dest: Path):
    """fairseq-preprocess with a joined dictionary."""
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "src", "--target-lang", "tgt",
                    "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
                    "--testpref", str(raw / "test"), "--destdir", str(dest), "--joined-dictionary",
                    "--workers", "1"], check=True, capture_output=True)
    return dest


REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = str(REPO / "fq_plugin")
BIN = Path(sys.executable).parent

# A tiny model and a short schedule that learns the lexicon task in about a minute on 2 CPU cores.
TRAIN_ARGS = ["--optimizer", "adam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50",
              "--max-tokens", "2000", "--cpu", "--no-epoch-checkpoints", "--log-format", "simple",
              "--log-interval", "20", "--seed", "1", "--num-workers", "0", "--label-smoothing", "0.1",
              # No prefetch thread: tiny epochs end runs while fairseq's daemon thread collates the next batch, and a
              # daemon thread inside torch's C++ code at interpreter exit can abort the process ("terminate called
              # without an active exception"; rare, seen in full test runs). It reads the same batches in order.
              "--data-buffer-size", "0"]


GOOD_BLEU = 60.0  # chance (random words of the right vocabulary) scores ~1-3 BLEU on the lexicon task


def cli_env(extra=None):
    """The environment of every CLI run in the tests: one thread per process (tests may run several)."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(extra or {}))


def run_cli(tool, *args, cwd=None, check=True, env=None, timeout=900, input_text=None):
    """Run a fairseq console script from this environment (``input_text`` on its stdin); return the
    CompletedProcess (text)."""
    proc = subprocess.run([str(BIN / tool), *map(str, args)], cwd=cwd, env=cli_env(env), capture_output=True,
                          text=True, timeout=timeout, input=input_text)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def run_main(main, *args):
    """Call a console script's ``main(argv)`` in this process (no interpreter start-up, for the cases that need no
    fresh process); return (exit code, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    return code or 0, err.getvalue()


def train_args(data, save_dir, *extra, arch="fq_transformer_tiny", criterion="qat_label_smoothed_cross_entropy",
               max_update=120, user_dir=PLUGIN_DIR):
    """The fairseq-train arguments of a tiny run on ``data``."""
    return [str(a) for a in (data, "--user-dir", user_dir, "--arch", arch, "--criterion", criterion,
                             "--save-dir", save_dir, "--max-update", max_update, *TRAIN_ARGS, *extra)]


def train(data, save_dir, *extra, arch="fq_transformer_tiny", criterion="qat_label_smoothed_cross_entropy",
          max_update=120, user_dir=PLUGIN_DIR, **kwargs):
    return run_cli("fairseq-train", *train_args(data, save_dir, *extra, arch=arch, criterion=criterion,
                                                max_update=max_update, user_dir=user_dir), **kwargs)


def generate_bleu(data, checkpoint, *extra, user_dir=PLUGIN_DIR, **kwargs):
    """Translate the test split with beam 4 / lenpen 0.6; return (sacrebleu BLEU, hypotheses by id)."""
    proc = run_cli("fairseq-generate", data, "--user-dir", user_dir, "--path", checkpoint, "--beam", "4",
                   "--lenpen", "0.6", "--cpu", "--gen-subset", "test", "--max-tokens", "4000",
                   "--required-batch-size-multiple", "1",  # with the default 8 the last batch is dropped
                   "--scoring", "sacrebleu", *extra, **kwargs)
    out = proc.stdout + proc.stderr
    score = re.search(r"BLEU = ([\d.]+)", out)
    assert score, out[-3000:]
    hyps = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", proc.stdout, re.M))
    return float(score.group(1)), hyps
