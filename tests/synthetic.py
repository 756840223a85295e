"""Tiny synthetic translation data for tests: a word-for-word lexicon translation task."""
import random
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
