#!/usr/bin/env bash
# Offline quickstart on the LibreOffice EN-DE sample shipped in scripts/data/: BPE, preprocess, train a float
# and an 8-bit fully quantized (FQT) tiny Transformer with the same budget, translate the test set, and
# print BLEU, checkpoint size and translation speed.
#
#   scripts/quickstart.sh [WORK_DIR]      env: UPDATES (default 300), THREADS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n 2,6p "$0"; exit 0; fi
WORK=${1:-work/quickstart}
UPDATES=${UPDATES:-300}
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
export PATH="$(pwd)/.venv/bin:$PATH"

echo "== [1/4] data: tokenize, BPE, binarize"
BPE_MERGES=4000 bash scripts/prepare_data.sh scripts/data/libreoffice-ende "$WORK/data"

MODEL=(--encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
       --encoder-layers 2 --decoder-layers 2 --encoder-attention-heads 4 --decoder-attention-heads 4
       --share-all-embeddings --dropout 0.1)
TRAIN=(--user-dir fq_plugin --optimizer adam --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt
       --warmup-updates 150 --label-smoothing 0.1 --max-tokens 4096 --max-update "$UPDATES" --seed 1 --cpu
       --no-epoch-checkpoints --no-save-optimizer-state --log-format tqdm --log-interval 25 --num-workers 0)

train() {  # name, args...
  local name=$1; shift
  if [ -s "$WORK/$name/checkpoint_last.pt" ] && grep -q "done training" "$WORK/$name/train.log" 2>/dev/null; then
    echo "   $name: already trained"; return
  fi
  mkdir -p "$WORK/$name"
  fairseq-train "$WORK/data/data-bin" --save-dir "$WORK/$name" "${TRAIN[@]}" "$@" 2>&1 | tee "$WORK/$name/train.log"
}

echo "== [2/4] train float Transformer ($UPDATES updates)"
train float --arch transformer --criterion label_smoothed_cross_entropy "${MODEL[@]}"
echo "== [3/4] train 8-bit fully quantized Transformer ($UPDATES updates, quantized from update 100)"
train fqt8 --arch fq_transformer --criterion qat_label_smoothed_cross_entropy --quant-start-update 100 "${MODEL[@]}"

echo "== [4/4] translate the test set (beam 4, lenpen 0.6) and score with sacrebleu"
{
  echo "| model | BLEU | tokens/s | checkpoint bytes |"
  echo "|---|---|---|---|"
  for name in float fqt8; do
    read -r bleu tps bytes < <(bash scripts/translate_and_score.sh "$WORK/data/data-bin" \
      "$WORK/$name/checkpoint_last.pt" "$WORK/data/raw/test.de" "$WORK/$name/test")
    echo "| $name | $bleu | $tps | $bytes |"
  done
} | tee "$WORK/results.md"
