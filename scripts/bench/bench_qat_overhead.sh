#!/usr/bin/env bash
# QAT training-time overhead, side by side: float Transformer vs the same Transformer with FQT 8-bit, the same
# updates on the same data, alternated REPEATS times; prints each time and the median FQT/float ratio.
#
#   scripts/bench/bench_qat_overhead.sh [DATA_BIN]   env: UPDATES (80), REPEATS (3), THREADS (2), DIM (128), LAYERS (2)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_BIN=${1:-work/ende-debian/data-bin}
UPDATES=${UPDATES:-80}; REPEATS=${REPEATS:-3}; DIM=${DIM:-128}; LAYERS=${LAYERS:-2}
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2}
COMMON=(--encoder-embed-dim "$DIM" --decoder-embed-dim "$DIM" --encoder-ffn-embed-dim $((4 * DIM))
        --decoder-ffn-embed-dim $((4 * DIM)) --encoder-layers "$LAYERS" --decoder-layers "$LAYERS"
        --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings --optimizer adam --lr 0.001
        --max-tokens 4096 --max-update "$UPDATES" --seed 1 --cpu --no-save --disable-validation
        --log-format simple --num-workers 0 --user-dir fq_plugin)
seconds() { fairseq-train "$DATA_BIN" "${COMMON[@]}" "$@" 2>&1 | grep -o "done training in [0-9.]*" | awk '{print $4}'; }
ratios=()
for i in $(seq "$REPEATS"); do
  f=$(seconds --arch transformer --criterion label_smoothed_cross_entropy)
  q=$(seconds --arch fq_transformer --criterion qat_label_smoothed_cross_entropy)
  r=$(echo "$q / $f" | bc -l)
  ratios+=("$r")
  printf 'run %d: float %.1f s, fqt %.1f s, ratio %.2f\n' "$i" "$f" "$q" "$r"
done
printf 'median FQT/float training time (%s updates, d=%s, %s+%s layers, %s threads): %.2f\n' "$UPDATES" "$DIM" \
  "$LAYERS" "$LAYERS" "$OMP_NUM_THREADS" "$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
