#!/usr/bin/env python3
"""CTranslate2 int8 on CPU: the outside anchor of the speed benchmark.

  ct2_translate.py convert --checkpoint FLOAT.pt --data-bin DIR --output-dir CT2DIR [--quantization int8]
  ct2_translate.py translate --model CT2DIR --source FILE.bpe --output HYP.txt
                             [--beam 4] [--lenpen 0.6] [--batch-size 64] [--threads 1] [--max-len 200] [--min-len 0]

`convert` runs CTranslate2's fairseq converter on a stock fairseq `transformer` checkpoint (skipped when
CT2DIR/model.bin exists). `translate` reads BPE-tokenized source lines (as fairseq sees them), writes one
hypothesis per line (subwords joined by spaces, input order) and prints a fairseq-generate-like speed line.

Input: the converter sets `add_source_eos` (and `</s>` as decoder start token), so CTranslate2 appends </s> to
each source itself, as fairseq's dataset does; we pass the subwords alone.

Length penalty: fairseq divides a finished hypothesis' log-probability (EOS included) by len**lenpen, len counting
the EOS. CTranslate2 documents `hypothesis_score /= hypothesis_length ** length_penalty`; measured with 4.8.5
(return_scores vs score_batch), its score is the log-probability with EOS over (tokens + 1)**length_penalty,
i.e. the same as fairseq. Output length is capped at 200 tokens, fairseq-generate's default (max_len_b).
"""
import argparse
import os
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
USER_DIR = os.path.join(REPO, "fq_plugin")


def convert(args):
    model_bin = os.path.join(args.output_dir, "model.bin")
    if os.path.exists(model_bin):
        print(f"CT2: {model_bin} exists, conversion skipped")
        return
    for path, what in ((args.checkpoint, "checkpoint"), (args.data_bin, "data-bin directory")):
        if not os.path.exists(path):
            sys.exit(f"ct2_translate.py: no such {what}: {path}")
    from ctranslate2.converters import FairseqConverter

    # user_dir imports fq_plugin, which lets torch's safe (weights_only) loader accept argparse.Namespace;
    # the converter's unsafe_deserialization stays off.
    converter = FairseqConverter(args.checkpoint, args.data_bin, user_dir=USER_DIR)
    converter.convert(args.output_dir, quantization=args.quantization)
    print(f"CT2: converted {args.checkpoint} to {args.output_dir} ({args.quantization})")


def translate(args):
    if not os.path.exists(os.path.join(args.model, "model.bin")):
        sys.exit(f"ct2_translate.py: {args.model}/model.bin not found (run `convert` first)")
    if not os.path.exists(args.source):
        sys.exit(f"ct2_translate.py: no such source file: {args.source}")
    import ctranslate2

    with open(args.source, encoding="utf-8") as f:
        source = [line.split() for line in f]
    translator = ctranslate2.Translator(args.model, device="cpu", compute_type="int8",
                                        inter_threads=1, intra_threads=args.threads)
    # length_penalty: same normalization as fairseq's --lenpen (see the docstring).
    start = time.perf_counter()  # like fairseq-generate's timer: decoding only, no model loading or I/O
    results = translator.translate_batch(source, beam_size=args.beam, length_penalty=args.lenpen,
                                         max_batch_size=args.batch_size, batch_type="examples",
                                         max_decoding_length=args.max_len, min_decoding_length=args.min_len)
    seconds = time.perf_counter() - start
    hypotheses = [result.hypotheses[0] for result in results]
    with open(args.output, "w", encoding="utf-8") as f:
        f.writelines(" ".join(hyp) + "\n" for hyp in hypotheses)
    # fairseq-generate's tokens/s counts each hypothesis' EOS; CTranslate2 leaves it out, so add 1 per sentence.
    n, tokens = len(hypotheses), sum(len(hyp) + 1 for hyp in hypotheses)
    print(f"CT2: translated {n} sentences ({tokens} tokens) in {seconds:.2f}s "
          f"({n / seconds:.2f} sentences/s, {tokens / seconds:.2f} tokens/s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("convert", help="convert a fairseq transformer checkpoint")
    p.add_argument("--checkpoint", required=True, help="float fairseq checkpoint (.pt)")
    p.add_argument("--data-bin", required=True, help="fairseq data-bin directory (dictionaries)")
    p.add_argument("--output-dir", required=True, help="CTranslate2 model directory")
    p.add_argument("--quantization", default="int8", help="weight type stored in model.bin (default: int8)")
    p.set_defaults(run=convert)
    p = commands.add_parser("translate", help="translate a BPE-tokenized source file")
    p.add_argument("--model", required=True, help="CTranslate2 model directory")
    p.add_argument("--source", required=True, help="BPE-tokenized source, one sentence a line")
    p.add_argument("--output", required=True, help="hypotheses, one a line, BPE subwords")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=0.6)
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads")
    p.add_argument("--max-len", type=int, default=200, help="max output tokens (fairseq-generate: 200)")
    p.add_argument("--min-len", type=int, default=0, help="min output tokens (fairseq-generate's --min-len)")
    p.set_defaults(run=translate)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
