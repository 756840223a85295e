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
source scripts/bench/common.sh

train float --arch transformer --criterion label_smoothed_cross_entropy --max-update "$UPDATES"
train fqt --arch fq_transformer --criterion qat_label_smoothed_cross_entropy --quant-start-update 100 \
  --max-update "$UPDATES"
# Post-training quantization of the float model: weights frozen, ranges calibrated over 200 updates.
train ptq --arch fq_transformer --criterion qat_label_smoothed_cross_entropy \
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
