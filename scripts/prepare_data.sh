#!/usr/bin/env bash
# Prepare an EN-DE corpus given as {train,valid,test}.{en,de}.xz: Moses tokenization (sacremoses), joint BPE
# (subword-nmt), fairseq-preprocess with a joined dictionary. Resumable: finished steps are skipped.
#
#   scripts/prepare_data.sh [--dry-run] SRC_DIR OUT_DIR       (env BPE_MERGES, default 10000; WORKERS, default 2)
set -euo pipefail
source "$(dirname "$0")/lib/recipe.sh"
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then sed -n 2,5p "$0"; exit 0; fi
if [ "${1:-}" = -n ] || [ "${1:-}" = --dry-run ]; then DRY_RUN=1; shift; fi
SRC=${1:?usage: prepare_data.sh [--dry-run] SRC_DIR OUT_DIR}
OUT=${2:?usage: prepare_data.sh [--dry-run] SRC_DIR OUT_DIR}
export SRC_LANG=en TGT_LANG=de
[ -f "$SRC/train.en.xz" ] || die "$SRC/train.en.xz not found"

run "mkdir -p $(q "$OUT/raw")"
for split in train valid test; do
  for lang in en de; do
    dst=$OUT/raw/$split.$lang
    done_or "$dst" "decompress $split.$lang" && continue
    run "xz -dc $(q "$SRC/$split.$lang.xz") > $(q "$dst.tmp") && mv $(q "$dst.tmp") $(q "$dst")"
  done
done
prepare_corpus "$OUT"
say "binarized: $OUT/data-bin"
