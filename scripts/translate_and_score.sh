#!/usr/bin/env bash
# Translate a test set with fairseq-generate (beam 4, length penalty 0.6, BPE removed), detokenize with
# sacremoses and score with sacrebleu against the raw reference.
#
#   scripts/translate_and_score.sh DATA_BIN CHECKPOINT REFERENCE OUT_DIR [extra fairseq-generate args]
#
# Writes OUT_DIR/{generate.out,generate.log,hyp.txt}; prints one line: BLEU  tokens/s  checkpoint-bytes
set -euo pipefail
DATA_BIN=${1:?usage}; CKPT=${2:?usage}; REF=${3:?usage}; OUT=${4:?usage}; shift 4
LANG_TGT=${TARGET_LANG:-de}
mkdir -p "$OUT"
fairseq-generate "$DATA_BIN" --user-dir "${FQ_USER_DIR:-fq_plugin}" --path "$CKPT" --gen-subset test \
  --beam 4 --lenpen 0.6 --max-tokens 6000 --remove-bpe --cpu "$@" > "$OUT/generate.out" 2> "$OUT/generate.log"
grep ^H- "$OUT/generate.out" | sed 's/^H-//' | sort -n -k1,1 | cut -f3 \
  | sacremoses -q -l "$LANG_TGT" detokenize > "$OUT/hyp.txt"
bleu=$(sacrebleu "$REF" -i "$OUT/hyp.txt" -b)
tps=$(grep -o "[0-9.]* tokens/s" "$OUT/generate.log" | tail -1 | cut -d' ' -f1)
echo "$bleu $tps $(stat -c %s "$CKPT")"
