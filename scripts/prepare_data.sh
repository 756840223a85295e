#!/usr/bin/env bash
# Prepare an EN-DE corpus given as {train,valid,test}.{en,de}.xz: Moses tokenization (sacremoses), joint BPE
# (subword-nmt), fairseq-preprocess with a joined dictionary. Resumable: finished steps are skipped.
#
#   scripts/prepare_data.sh SRC_DIR OUT_DIR       (env BPE_MERGES, default 10000)
set -euo pipefail
SRC=${1:?usage: prepare_data.sh SRC_DIR OUT_DIR}
OUT=${2:?usage: prepare_data.sh SRC_DIR OUT_DIR}
MERGES=${BPE_MERGES:-10000}
mkdir -p "$OUT/raw" "$OUT/tok" "$OUT/bpe"
[ -f "$SRC/train.en.xz" ] || { echo "error: $SRC/train.en.xz not found" >&2; exit 1; }

for split in train valid test; do
  for lang in en de; do
    [ -s "$OUT/raw/$split.$lang" ] || xz -dc "$SRC/$split.$lang.xz" > "$OUT/raw/$split.$lang"
    if [ ! -s "$OUT/tok/$split.$lang" ]; then
      sacremoses -q -l "$lang" -j 2 tokenize -x < "$OUT/raw/$split.$lang" > "$OUT/tok/$split.$lang.tmp"
      mv "$OUT/tok/$split.$lang.tmp" "$OUT/tok/$split.$lang"
    fi
  done
done
echo "== tokenized"

if [ ! -s "$OUT/bpe/codes" ]; then
  subword-nmt learn-joint-bpe-and-vocab -s "$MERGES" -t \
    --input "$OUT/tok/train.en" "$OUT/tok/train.de" -o "$OUT/bpe/codes.tmp" \
    --write-vocabulary "$OUT/bpe/vocab.en" "$OUT/bpe/vocab.de"
  mv "$OUT/bpe/codes.tmp" "$OUT/bpe/codes"
fi
for split in train valid test; do
  for lang in en de; do
    if [ ! -s "$OUT/bpe/$split.$lang" ]; then
      subword-nmt apply-bpe -c "$OUT/bpe/codes" --vocabulary "$OUT/bpe/vocab.$lang" --vocabulary-threshold 20 \
        < "$OUT/tok/$split.$lang" > "$OUT/bpe/$split.$lang.tmp"
      mv "$OUT/bpe/$split.$lang.tmp" "$OUT/bpe/$split.$lang"
    fi
  done
done
echo "== BPE applied ($MERGES merges)"

if [ ! -s "$OUT/data-bin/dict.en.txt" ]; then
  rm -rf "$OUT/data-bin"
  fairseq-preprocess --source-lang en --target-lang de --trainpref "$OUT/bpe/train" \
    --validpref "$OUT/bpe/valid" --testpref "$OUT/bpe/test" --destdir "$OUT/data-bin.tmp" \
    --joined-dictionary --workers 2 > "$OUT/preprocess.log"
  mv "$OUT/data-bin.tmp" "$OUT/data-bin"
fi
echo "== binarized: $OUT/data-bin"
