#!/usr/bin/env bash
# Benchmark of issue "FFN node pruning" (seed 003 §4.4, Table 5) on the 8-bit FQT model of scripts/bench/bench_fqt.sh:
# unpruned vs adaptive x_max-threshold pruning (z = 0.025, and a z that reaches about 10 % of the encoder nodes) vs
# the two fixed-ratio baselines (smallest L1 norm, smallest x_max) at the same encoder proportion as adaptive.
# BLEU by sacrebleu on detokenized fairseq-generate output (beam 4, lenpen 0.6) of the 1,000-sentence test set.
#
#   scripts/bench/bench_pruning.sh [WORK_DIR]
#   env: BASE (work/bench_fqt/fqt/checkpoint_best.pt), THREADS (2), UPDATES (300: --prune-updates), Z (0.025),
#        Z10 (default: computed from the statistics as the z that puts 10 % of the encoder's nodes under z*sigma)
# The x_max statistics are collected once (--prune-stats) and reused by the other runs, which prune after one update.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-work/bench_pruning}
BASE=${BASE:-work/bench_fqt/fqt/checkpoint_best.pt}
THREADS=${THREADS:-2}
UPDATES=${UPDATES:-300}
Z=${Z:-0.025}
Z10=${Z10:-}
STATS=$WORK/xmax_stats.pt
DATA=work/ende-debian
[ -s "$BASE" ] || { echo "missing $BASE: run scripts/bench/bench_fqt.sh first" >&2; exit 1; }
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
mkdir -p "$WORK"

# The options of the FQT training run (bench_fqt.sh): the restored optimizer and criterion must match.
MODEL=(--arch fq_transformer --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512
       --decoder-ffn-embed-dim 512 --encoder-layers 2 --decoder-layers 2 --encoder-attention-heads 4
       --decoder-attention-heads 4 --share-all-embeddings --dropout 0.1)
TRAIN=(--optimizer adam --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt --warmup-updates 300
       --clip-norm 0.0 --criterion qat_label_smoothed_cross_entropy --label-smoothing 0.1 --quant-start-update 100
       --max-tokens 4096 --seed 1 --cpu --no-epoch-checkpoints --log-format simple --log-interval 50
       --num-workers 0 --user-dir fq_plugin --disable-validation)

prune() {  # name, pruning options...: the command of the issue, on the FQT checkpoint
  local name=$1; shift
  if [ ! -s "$WORK/$name/checkpoint_pruned.pt" ]; then
    rm -rf "${WORK:?}/$name"; mkdir -p "$WORK/$name"
    /usr/bin/time -f "%e" -o "$WORK/$name/seconds" fairseq-train "$DATA/data-bin" --task fq_pruning \
      --restore-file "$BASE" --save-dir "$WORK/$name" "${TRAIN[@]}" "${MODEL[@]}" "$@" > "$WORK/$name/prune.log" 2>&1
  fi
}

encoder_ratio() {  # name -> fraction of encoder FFN nodes pruned, from the task's log
  grep -o "fq_pruning: encoder: [0-9]* -> [0-9]*" "$WORK/$1/prune.log" | tail -1 \
    | awk '{printf "%.6f", ($3 - $5) / $3}'
}

layers() {  # name -> "enc a,b / dec c,d" FFN sizes
  .venv/bin/python - "$WORK/$1/checkpoint_pruned.pt" <<'EOF'
import sys, torch, fq_plugin  # noqa: F401  (allows the checkpoint's types)
model = torch.load(sys.argv[1], map_location="cpu")["cfg"]["model"]
print(f"{model.encoder_ffn_dims} / {model.decoder_ffn_dims}")
EOF
}

params() {  # name -> parameter count of the saved model (quantizer state excluded, shared embeddings once)
  .venv/bin/python - "$WORK/$1/checkpoint_pruned.pt" <<'EOF'
import sys, torch, fq_plugin  # noqa: F401
state = torch.load(sys.argv[1], map_location="cpu")["model"]
tensors = {v.untyped_storage().data_ptr(): v for k, v in state.items() if "quantizer" not in k and "_float_tensor" not in k and v.is_floating_point()}
print(sum(v.numel() for v in tensors.values()))
EOF
}

# collects the statistics (UPDATES updates) and saves them; every later run reads them
prune adaptive_z$Z --prune-method adaptive --prune-z "$Z" --prune-updates "$UPDATES" --prune-stats "$STATS"
prune unpruned --prune-z 0 --prune-stats "$STATS"                 # same checkpoint format, nothing removed
if [ -z "$Z10" ]; then  # pool x_max/sigma(layer) over the encoder; z between the 10 % and the next node
  Z10=$(.venv/bin/python - "$STATS" <<'EOF'
import sys, torch
ratios = torch.cat([x / x.std(unbiased=False) for x in torch.load(sys.argv[1])["encoder"]]).sort().values
k = round(0.1 * ratios.numel())
print(f"{float(ratios[k - 1] + ratios[k]) / 2:.4f}")
EOF
)
fi
prune adaptive_z$Z10 --prune-method adaptive --prune-z "$Z10" --prune-stats "$STATS"
RATIO=$(encoder_ratio adaptive_z$Z10)
prune fixed_xmax --prune-method xmax --prune-ratio "$RATIO" --prune-stats "$STATS"
prune fixed_l1 --prune-method l1 --prune-ratio "$RATIO" --prune-stats "$STATS"    # L1 uses the weights only

{
  echo "| model | FFN sizes enc / dec | encoder nodes pruned | parameters | checkpoint bytes | compression vs float | test BLEU | prune run (s) |"
  echo "|---|---|---|---|---|---|---|---|"
  full=$(params unpruned)
  for name in unpruned adaptive_z$Z adaptive_z$Z10 fixed_xmax fixed_l1; do
    if [ ! -s "$WORK/$name/score" ]; then  # translations are kept: a rerun only scores what is missing
      FQ_USER_DIR=fq_plugin bash scripts/translate_and_score.sh "$DATA/data-bin" "$WORK/$name/checkpoint_pruned.pt" \
        "$DATA/raw/test.de" "$WORK/$name/test" > "$WORK/$name/score.tmp" && mv "$WORK/$name/score.tmp" "$WORK/$name/score"
    fi
    read -r bleu tps bytes < <(tail -1 "$WORK/$name/score")
    n=$(params "$name")
    ratio=$(encoder_ratio "$name")
    echo "| $name | $(layers "$name") | $(echo "$ratio * 100" | bc -l | cut -c1-5) % | $n | $bytes |" \
         "$(echo "4 * $full / $n" | bc -l | cut -c1-5)x | $bleu | $(cat "$WORK/$name/seconds") |"
  done
  echo
  echo "fixed-ratio baselines use the encoder proportion of adaptive z=$Z10: $RATIO; statistics over" \
       "--prune-updates $UPDATES updates of 4,096 tokens (collection took $(cat "$WORK/adaptive_z$Z/seconds") s);" \
       "threads $THREADS; base $BASE"
} | tee "$WORK/results.md"
