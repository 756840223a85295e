"""fq-report through its command line: the table and plot from results directories, fairseq-generate output
files and checkpoints; each kind of bad input is refused with a clear message. (The recipe test runs it on
real translations of tiny trained models.)"""
import subprocess
import sys

import pytest

from fq_plugin.report import main
from helpers import REPO

# The two lines fq-report reads, as fairseq-generate --scoring sacrebleu writes them (stdout and stderr).
GENERATE_TAIL = ("2026-11-23 | INFO | fairseq_cli.generate | Translated 60 sentences (785 tokens) in 3.5s "
                 "(16.17 sentences/s, 226.70 tokens/s)\n"
                 "Generate test with beam=4: BLEU = 31.25 61.0/38.3/25.0/16.1 (BP = 1.000 ratio = 1.02)\n")


def report(*args):
    return subprocess.run([sys.executable, "-m", "fq_plugin.report", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_table_and_plot_from_scores_generate_output_and_checkpoint(tmp_path):
    scored = tmp_path / "float"
    scored.mkdir()
    (scored / "scores.txt").write_text("bleu 27.3\nbleu_tok 28.1\ntokens_per_s 950.5\ncheckpoint_bytes 4000000\n")
    (tmp_path / "fqt.txt").write_text("H-0\t-0.1\tein Test\n" + GENERATE_TAIL)
    ckpt = tmp_path / "fqt.pt"
    ckpt.write_bytes(b"\0" * 1000000)
    (tmp_path / "runs.tsv").write_text(f"# name\tpath\tcheckpoint\nfqt8\t{tmp_path / 'fqt.txt'}\t{ckpt}\n")
    proc = report("--run", f"float={scored}", "--runs", tmp_path / "runs.tsv", "--out", tmp_path / "out" / "report",
                  "--title", "tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| float | 27.30 | 28.10 | 4.0 | 1.0x | 950.5 |" in table
    assert "| fqt8 | 31.25 | – | 1.0 | 4.0x | 226.7 |" in table
    assert (tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_refused_clearly(tmp_path, capsys):
    (tmp_path / "nobleu.txt").write_text("H-0\t-0.1\tein Test\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "scores.txt").write_text("tokens_per_s 3\n")
    (tmp_path / "bad.tsv").write_text("a\tb\tc\td\n")
    (tmp_path / "ok.txt").write_text(GENERATE_TAIL)
    cases = [(["--run", "nopath"], "expected NAME=PATH[:CHECKPOINT]"),
             (["--run", f"x={tmp_path / 'missing'}"], "does not exist"),
             (["--run", f"x={tmp_path / 'nobleu.txt'}"], "no 'BLEU = ' line"),
             (["--run", f"x={tmp_path / 'd'}"], "has no 'bleu' line"),
             (["--run", f"x={tmp_path / 'ok.txt'}:{tmp_path / 'no.pt'}"], "checkpoint"),
             (["--runs", tmp_path / "bad.tsv"], "expected NAME<TAB>PATH"),
             (["--run", f"x={tmp_path / 'ok.txt'}", "--run", f"x={tmp_path / 'ok.txt'}"], "must be unique"),
             ([], "no runs given")]
    for args, message in cases:  # the console script's own entry point, in this process (fast)
        with pytest.raises(SystemExit) as exit_info:
            main([*map(str, args), "--out", str(tmp_path / "r")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "r.md").exists()
