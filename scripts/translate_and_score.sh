#!/usr/bin/env bash
# Translate a test set with fairseq-generate (beam 4, length penalty 0.6, BPE removed), detokenize with
# sacremoses and score with sacrebleu against the raw reference.
#
#   scripts/translate_and_score.sh DATA_BIN CHECKPOINT REFERENCE OUT_DIR [extra fairseq-generate args]
#
# Writes OUT_DIR/{generate.out,generate.log,hyp.txt,scores.txt}; prints one line: BLEU  tokens/s  checkpoint-bytes
# (scores.txt adds tokenized BLEU, with compound splitting when TARGET_LANG is de). Always translates anew.
set -euo pipefail
source "$(dirname "$0")/lib/recipe.sh"
DATA_BIN=${1:?usage}; CKPT=${2:?usage}; REF=${3:?usage}; OUT=${4:?usage}; shift 4
VERBOSE=0
rm -f "$OUT/generate.out" "$OUT/scores.txt"
generate_test "$DATA_BIN" "$CKPT" "$OUT" "$@"
score_test "$OUT" "$REF" "$CKPT" "${TARGET_LANG:-de}"
awk '{v[$1]=$2} END {print v["bleu"], v["tokens_per_s"], v["checkpoint_bytes"]}' "$OUT/scores.txt"
