"""``fq-report``: a markdown table and a plot of translation quality against model size and speed.

Each run is a name and the output of a translation: a directory written by ``scripts/translate_and_score.sh`` or
the WMT14 recipes (``scores.txt``, else ``generate.out`` + ``generate.log``), or one file holding
``fairseq-generate --scoring sacrebleu`` output (its "BLEU = " line and, when stderr is in it too, the
"... tokens/s" line), optionally followed by ``:CHECKPOINT`` whose size on disk is the model size.

    fq-report --run float=work/float/test --run fqt8=work/fqt8/generate.txt:work/fqt8/checkpoint_last.pt \\
        --out results/report          # writes results/report.md and results/report.png
"""
import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

BLEU_RE = re.compile(r"\bBLEU4? = ([0-9.]+)")
TOKENS_PER_S_RE = re.compile(r"([0-9.]+) tokens/s")

class ReportError(ValueError):
    """Input that cannot be reported (missing file, no BLEU in it, malformed run)."""

@dataclass
class Run:
    """One translated test set: quality, speed and size of the model that produced it."""

    name: str
    bleu: float
    bleu_tok: Optional[float] = None
    tokens_per_s: Optional[float] = None
    size_bytes: Optional[int] = None
    source: str = ""

    @property
    def size_mb(self):
        return None if self.size_bytes is None else self.size_bytes / 1e6

def _read_scores(path: Path):
    """``key value`` lines of a scores.txt; empty values (e.g. no speed logged) are dropped."""
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.strip().partition(" ")
        if key and value.strip():
            values[key] = value.strip()
    return values

def _float(value, what, where):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{where}: {what} is {value!r}, not a number") from None

def _last(regex, text):
    found = regex.findall(text)
    return float(found[-1]) if found else None

def parse_run(spec: str) -> Run:
    """Read one ``NAME=PATH[:CHECKPOINT]`` run.

    Args:
        spec: run name, ``=``, a results directory or a fairseq-generate output file, optionally ``:checkpoint``.
    Returns:
        the :class:`Run`.
    """
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ReportError(f"--run {spec!r}: expected NAME=PATH[:CHECKPOINT]")
    path, _, checkpoint = rest.partition(":")
    src = Path(path)
    if not src.exists():
        raise ReportError(f"run {name}: {src} does not exist")
    run = Run(name=name, bleu=math.nan, source=str(src))
    scores = src / "scores.txt" if src.is_dir() else None
    if scores is not None and scores.is_file():
        values = _read_scores(scores)
        if "bleu" not in values:
            raise ReportError(f"run {name}: {scores} has no 'bleu' line")
        run.bleu = _float(values["bleu"], "bleu", scores)
        if "bleu_tok" in values:
            run.bleu_tok = _float(values["bleu_tok"], "bleu_tok", scores)
        if "tokens_per_s" in values:
            run.tokens_per_s = _float(values["tokens_per_s"], "tokens_per_s", scores)
        if "checkpoint_bytes" in values:
            run.size_bytes = int(_float(values["checkpoint_bytes"], "checkpoint_bytes", scores))
    else:
        files = [src / "generate.out", src / "generate.log"] if src.is_dir() else [src]
        text = "\n".join(f.read_text(errors="replace") for f in files if f.is_file())
        bleu = _last(BLEU_RE, text)
        if bleu is None:
            raise ReportError(f"run {name}: no 'BLEU = ' line in {', '.join(map(str, files))} (translate with "
                              "fairseq-generate --scoring sacrebleu, or use scripts/translate_and_score.sh)")
        run.bleu = bleu
        run.tokens_per_s = _last(TOKENS_PER_S_RE, text)
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise ReportError(f"run {name}: checkpoint {checkpoint} does not exist")
        run.size_bytes = os.path.getsize(checkpoint)
    return run

def read_runs_file(path: Path) -> List[str]:
    """Run specs from a file: one ``NAME<TAB>PATH[<TAB>CHECKPOINT]`` (or ``NAME=PATH[:CHECKPOINT]``) a line."""
    specs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) == 1:
            specs.append(fields[0])
        elif len(fields) in (2, 3):
            specs.append(f"{fields[0]}={fields[1]}" + (f":{fields[2]}" if len(fields) == 3 else ""))
        else:
            raise ReportError(f"{path}:{number}: expected NAME<TAB>PATH[<TAB>CHECKPOINT]")
    return specs

def _fmt(value, digits):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"

def markdown_table(runs: List[Run], title: str = "") -> str:
    """The markdown report: one row per run, size relative to the first run that has one."""
    ref = next((r.size_bytes for r in runs if r.size_bytes), None)
    lines = [f"## {title}", ""] if title else []
    lines += ["| model | BLEU (sacrebleu) | BLEU (tokenized) | size (MB) | compression | tokens/s |",
              "|---|---|---|---|---|---|"]
    for r in runs:
        ratio = f"{ref / r.size_bytes:.1f}x" if ref and r.size_bytes else "–"
        lines.append(f"| {r.name} | {_fmt(r.bleu, 2)} | {_fmt(r.bleu_tok, 2)} | {_fmt(r.size_mb, 1)} | {ratio} | "
                     f"{_fmt(r.tokens_per_s, 1)} |")
    lines += ["", "BLEU (sacrebleu): detokenized, 13a. BLEU (tokenized): Moses-tokenized output and reference "
              "(German compounds split as ##AT##-##AT##), comparable with multi-bleu numbers of papers. "
              "Size: bytes on disk of the checkpoint fairseq-generate loads (1 MB = 10^6 bytes); compression "
              "relative to the first row."]
    return "\n".join(lines) + "\n"

def plot(runs: List[Run], path: Path, title: str = ""):
    """Left: BLEU against size (MB, log scale); right: tokens/s per run. Runs missing a value are left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sized = [r for r in runs if r.size_bytes and not math.isnan(r.bleu)]
    for r in sized:
        left.scatter(r.size_mb, r.bleu)
        left.annotate(r.name, (r.size_mb, r.bleu), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("model size on disk (MB, log scale)")
    left.set_ylabel("BLEU (sacrebleu)")
    left.set_title("quality vs size")
    left.grid(True, which="both", alpha=0.3)
    timed = [r for r in runs if r.tokens_per_s is not None]
    right.bar(range(len(timed)), [r.tokens_per_s for r in timed])
    right.set_xticks(range(len(timed)))
    right.set_xticklabels([r.name for r in timed], rotation=45, ha="right", fontsize=8)
    right.set_ylabel("target tokens/s (fairseq-generate)")
    right.set_title("translation speed")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

def main(argv=None):
    """Write OUT.md and OUT.png for the given runs; returns the list of runs."""
    parser = argparse.ArgumentParser(prog="fq-report", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=PATH[:CHECKPOINT]",
                        help="a results directory or fairseq-generate output file, and optionally the checkpoint")
    parser.add_argument("--runs", type=Path, help="file with one run a line (NAME<TAB>PATH[<TAB>CHECKPOINT])")
    parser.add_argument("--out", required=True, type=Path, help="output prefix: writes OUT.md and OUT.png")
    parser.add_argument("--title", default="", help="heading of the table and the plot")
    args = parser.parse_args(argv)
    try:
        specs = list(args.run) + (read_runs_file(args.runs) if args.runs else [])
        if not specs:
            raise ReportError("no runs given (use --run NAME=PATH[:CHECKPOINT] or --runs FILE)")
        runs = [parse_run(spec) for spec in specs]
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ReportError(f"run names must be unique, got {names}")
    except (ReportError, OSError) as err:
        parser.error(str(err))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md, png = args.out.with_name(args.out.name + ".md"), args.out.with_name(args.out.name + ".png")
    md.write_text(markdown_table(runs, args.title))
    plot(runs, png, args.title)
    print(md.read_text(), end="")
    print(f"wrote {md} and {png}")
    return runs

def cli_main():
    main()
    return 0

if __name__ == "__main__":
    sys.exit(cli_main())
