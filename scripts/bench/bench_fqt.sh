#!/usr/bin/env bash
# Benchmark of issue "FQT 8-bit": float Transformer vs the same Transformer with FQT 8-bit (and post-training
# quantization of the float model), same architecture, updates and seed, on ../shared/data/ende-debian.
# BLEU by sacrebleu on detokenized output of fairseq-generate (beam 4, lenpen 0.6); QAT time overhead.
#
#   scripts/bench/bench_fqt.sh [WORK_DIR]     env: UPDATES (default 1000), THREADS (2), SEED (1)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-work/bench_fqt}
UPDATES=${UPDATES:-1000}
THREADS=${THREADS:-2}
SEED=${SEED:-1}
DATA=work/ende-debian
bash scripts/prepare_data.sh ../shared/data/ende-debian "$DATA"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
mkdir -p "$WORK"

MODEL=(--encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
       --encoder-layers 2 --decoder-layers 2 --encoder-attention-heads 4 --decoder-attention-heads 4
       --share-all-embeddings --dropout 0.1)
TRAIN=(--optimizer adam --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt --warmup-updates 300
       --clip-norm 0.0 --label-smoothing 0.1 --max-tokens 4096 --max-update "$UPDATES" --seed "$SEED" --cpu
       --no-epoch-checkpoints --save-interval-updates 200 --keep-interval-updates 1 --log-format simple
       --log-interval 50 --num-workers 0 --user-dir fq_plugin)

train() {  # name, extra args...
  local name=$1; shift
  if [ ! -s "$WORK/$name/done" ]; then
    mkdir -p "$WORK/$name"
    fairseq-train "$DATA/data-bin" --save-dir "$WORK/$name" "${TRAIN[@]}" "$@" 2>&1 | tee -a "$WORK/$name/train.log"
    grep -o "done training in [0-9.]*" "$WORK/$name/train.log" | tail -1 | awk '{print $4}' > "$WORK/$name/done"
  fi
}

train float --arch transformer --criterion label_smoothed_cross_entropy "${MODEL[@]}"
train fqt --arch fq_transformer --criterion qat_label_smoothed_cross_entropy --quant-start-update 100 "${MODEL[@]}"
# Post-training quantization of the float model: weights frozen, ranges calibrated over 200 updates.
train ptq --arch fq_transformer --criterion qat_label_smoothed_cross_entropy "${MODEL[@]}" \
  --restore-file "$WORK/float/checkpoint_last.pt" --reset-optimizer --reset-dataloader --reset-meters \
  --quant-start-update 0 --quant-calibration-updates 200 --max-update 200

{
  echo "| model | BLEU (sacrebleu, test) | training time (s) |"
  echo "|---|---|---|"
  for name in float fqt ptq; do
    read -r bleu tps bytes < <(FQ_USER_DIR=fq_plugin bash scripts/translate_and_score.sh "$DATA/data-bin" \
      "$WORK/$name/checkpoint_last.pt" "$DATA/raw/test.de" "$WORK/$name/test")
    echo "| $name | $bleu | $(cat "$WORK/$name/done") |"
  done
  echo
  echo "FQT/float training time for $UPDATES updates: $(echo "$(cat "$WORK/fqt/done") / $(cat "$WORK/float/done")" | bc -l | cut -c1-5)"
} | tee "$WORK/results.md"
