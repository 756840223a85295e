#!/usr/bin/env bash
# Offline quickstart on the LibreOffice EN-DE sample shipped in scripts/data/: BPE, preprocess, train a float,
# an 8-bit fully quantized (FQT) and a 1-bit (BitNet) tiny Transformer with the same budget, pack the two
# quantized ones with fq-pack, translate the test set with the float and the two packed checkpoints, and print
# BLEU, file size and translation speed (fq-report also writes a plot). The QAT checkpoints are not translated again:
# a packed checkpoint translates exactly like the QAT checkpoint it came from (tests/test_pack.py); step 5 prints
# both sizes.
#
#   scripts/quickstart.sh [WORK_DIR]      env: UPDATES (default 250), THREADS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n 2,7p "$0"; exit 0; fi
WORK=${1:-work/quickstart}
UPDATES=${UPDATES:-250}
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
export PATH="$(pwd)/.venv/bin:$PATH"

echo "== [1/6] data: tokenize, BPE, binarize"
BPE_MERGES=4000 bash scripts/prepare_data.sh scripts/data/libreoffice-ende "$WORK/data"

MODEL=(--encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
       --encoder-layers 2 --decoder-layers 2 --encoder-attention-heads 4 --decoder-attention-heads 4
       --share-all-embeddings --dropout 0.1)
TRAIN=(--user-dir fq_plugin --optimizer adam --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt
       --warmup-updates 150 --label-smoothing 0.1 --max-tokens 4096 --max-update "$UPDATES" --seed 1 --cpu
       --no-epoch-checkpoints --no-save-optimizer-state --log-format tqdm --log-interval 25 --num-workers 0)
QAT=(--criterion qat_label_smoothed_cross_entropy --quant-start-update 100)

train() {  # name, args...
  local name=$1; shift
  if [ -s "$WORK/$name/checkpoint_last.pt" ] && grep -q "done training" "$WORK/$name/train.log" 2>/dev/null; then
    echo "   $name: already trained"; return
  fi
  mkdir -p "$WORK/$name"
  fairseq-train "$WORK/data/data-bin" --save-dir "$WORK/$name" "${TRAIN[@]}" "$@" 2>&1 | tee "$WORK/$name/train.log"
}

echo "== [2/6] train float Transformer ($UPDATES updates)"
train float --arch transformer --criterion label_smoothed_cross_entropy "${MODEL[@]}"
echo "== [3/6] train 8-bit fully quantized Transformer ($UPDATES updates, quantized from update 100)"
# one range per activation point, so that the packed model runs integer GEMMs in every projection
train fqt8 --arch fq_transformer "${QAT[@]}" --quant-bucketing weight "${MODEL[@]}"
echo "== [4/6] train 1-bit BitNet Transformer ($UPDATES updates, binarized from update 100)"
train bitnet1 --arch bitnet_transformer "${QAT[@]}" --embedding-bits 8 "${MODEL[@]}"

echo "== [5/6] pack the quantized checkpoints (fq-pack)"
for name in fqt8 bitnet1; do
  [ -s "$WORK/$name/packed.pt" ] || fq-pack "$WORK/$name/checkpoint_last.pt" "$WORK/$name/packed.pt"
  echo "   $name: QAT checkpoint $(stat -c %s "$WORK/$name/checkpoint_last.pt") bytes -> packed.pt" \
       "$(stat -c %s "$WORK/$name/packed.pt") bytes"
done

echo "== [6/6] translate the test set (beam 4, lenpen 0.6) and score with sacrebleu"
runs=()
for entry in float:checkpoint_last.pt fqt8_packed:packed.pt bitnet1_packed:packed.pt; do
  name=${entry%%:*}
  ckpt=$WORK/${name%_packed}/${entry#*:}
  echo "   $name: $ckpt"
  bash scripts/translate_and_score.sh "$WORK/data/data-bin" "$ckpt" "$WORK/data/raw/test.de" "$WORK/$name.test" \
    > /dev/null
  runs+=(--run "$name=$WORK/$name.test")
done
fq-report "${runs[@]}" --out "$WORK/results" --title "Quickstart: LibreOffice EN-DE, $UPDATES updates" \
  > /dev/null 2> "$WORK/report.log"
cat "$WORK/results.md"
echo "(plot: $WORK/results.png; the packed checkpoints hold integer codes and bits and translate exactly like the QAT"
echo " checkpoints they were packed from, which hold float32 weights and are as large as the float model)"
