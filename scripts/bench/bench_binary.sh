#!/usr/bin/env bash
# Benchmark of the binarized models (BMT, BitNet, BiT, ternary and ternary-split-binary) on
# ../shared/data/ende-debian with the protocol and budget of scripts/bench/bench_fqt.sh (same model size,
# data, optimizer, seed and number of updates); the float reference is bench_fqt.sh's float run.
#
#   scripts/bench/bench_binary.sh [RUN ...]     env: WORK (work/bench_binary), UPDATES (1000), THREADS (2), SEED (1), FLOAT
#
# RUNs (default: all, in the order of ALL_RUNS below); then the table.
# Runs are resumable (a finished run is skipped, a scored checkpoint is not translated again); several invocations
# with different RUNs may run in parallel.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-work/bench_binary}
UPDATES=${UPDATES:-1000}
THREADS=${THREADS:-2}
SEED=${SEED:-1}
FLOAT=${FLOAT:-work/bench_fqt/float/checkpoint_last.pt}  # the teacher; bench_pack.sh's float run is the same model
source scripts/bench/common.sh
TRAIN+=(--criterion qat_label_smoothed_cross_entropy)
QUANT=(--quant-start-update 100)  # float for the first 100 updates, as the FQT benchmark
FROM_FLOAT=(--quant-start-update 0 --max-update "$UPDATES" --restore-file "$FLOAT" --reset-optimizer --reset-dataloader
            --reset-meters --teacher-path "$FLOAT" --kd-alpha 0.5)

run() {
  case $1 in
    bmt_w1) train bmt_w1 --arch bmt_transformer "${QUANT[@]}" --max-update "$UPDATES" ;;
    bmt_w1_noln) train bmt_w1_noln --arch bmt_transformer "${QUANT[@]}" --max-update "$UPDATES" \
                   --no-extra-layernorm ;;
    bmt_w1_kd) train bmt_w1_kd --arch bmt_transformer "${QUANT[@]}" --max-update "$UPDATES" \
                 --teacher-path "$FLOAT" --kd-alpha 0.5 ;;
    # The same budget, float for the first half: binary weights from update UPDATES/2, distilled throughout.
    bmt_w1_kd_late) train bmt_w1_kd_late --arch bmt_transformer --quant-start-update $((UPDATES / 2)) \
                      --max-update "$UPDATES" --teacher-path "$FLOAT" --kd-alpha 0.5 ;;
    # Two stages: the float teacher's weights initialize the 1-bit (ternary) model, binary from its first update,
    # which the teacher then distils for UPDATES more updates (fairseq's update count and warm-up restart at 0).
    bmt_w1_from_float) train bmt_w1_from_float --arch bmt_transformer "${FROM_FLOAT[@]}" ;;
    ternary_from_float) train ternary_from_float --arch bmt_transformer --weight-quant ternary "${FROM_FLOAT[@]}" ;;
    # Staged (BMT): float, binary weights from 100, 1-bit projection inputs from update 300.
    bmt_w1a1) train bmt_w1a1 --arch bmt_transformer "${QUANT[@]}" --activation-quant-start-update 300 \
                --max-update "$UPDATES" --binarize-activations --no-binarize-attention ;;
    bitnet) train bitnet --arch bitnet_transformer "${QUANT[@]}" --max-update "$UPDATES" ;;
    bit_kd) train bit_kd --arch bit_transformer "${QUANT[@]}" --max-update "$UPDATES" --no-binarize-attention \
              --teacher-path "$FLOAT" --kd-alpha 0.5 ;;
    ternary) train ternary --arch bmt_transformer --weight-quant ternary "${QUANT[@]}" --max-update "$UPDATES" ;;
    ternary_kd) train ternary_kd --arch bmt_transformer --weight-quant ternary "${QUANT[@]}" --max-update "$UPDATES" \
                  --teacher-path "$FLOAT" --kd-alpha 0.5 ;;
    # Ternary weight splitting: the ternary model at update UPDATES/2, split, fine-tuned for the other half
    # (--reset-optimizer restarts fairseq's update count and learning-rate schedule at 0; quantized from the start).
    split)
      train ternary_half --arch bmt_transformer --weight-quant ternary "${QUANT[@]}" --max-update $((UPDATES / 2))
      [ -s "$WORK/split.pt" ] || python -m fq_plugin.split "$WORK/ternary_half/checkpoint_last.pt" "$WORK/split.pt"
      train split --arch bmt_transformer --weight-quant split_binary --quant-start-update 0 \
        --max-update $((UPDATES - UPDATES / 2)) --restore-file "$WORK/split.pt" --reset-optimizer ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

ALL_RUNS=(bmt_w1 bmt_w1_noln bmt_w1_kd bmt_w1_kd_late bmt_w1_from_float bmt_w1a1 bitnet bit_kd ternary ternary_kd
          ternary_from_float split)
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=("${ALL_RUNS[@]}")
for name in "${RUNS[@]}"; do run "$name"; done

{
  echo "| model | BLEU (sacrebleu, test) | training time (s) |"
  echo "|---|---|---|"
  for name in "${ALL_RUNS[@]}"; do
    [ -s "$WORK/$name/done" ] || continue
    if [ ! "$WORK/$name/test/scores.txt" -nt "$WORK/$name/checkpoint_last.pt" ]; then  # scored once per checkpoint
      FQ_USER_DIR=fq_plugin bash scripts/translate_and_score.sh "$DATA/data-bin" "$WORK/$name/checkpoint_last.pt" \
        "$DATA/raw/test.de" "$WORK/$name/test" > /dev/null
    fi
    bleu=$(awk '$1 == "bleu" {print $2}' "$WORK/$name/test/scores.txt")
    echo "| $name | $bleu | $(cat "$WORK/$name/done") |"
  done
} | tee "$WORK/results.md"
