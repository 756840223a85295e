#!/usr/bin/env bash
# Benchmark of issue "packed checkpoints": file sizes at Transformer-base shapes, and on ../shared/data/ende-debian
# the quality and fairseq-generate speed of packed checkpoints next to the fake-quantized checkpoints they come
# from, float fairseq and CTranslate2 int8 (the outside anchor), all translating the same test set.
#
#   scripts/bench/bench_pack.sh [STEP ...]     steps (default all): sizes train quality speed base_speed
#   env: WORK (work/bench_pack), UPDATES (1000), THREADS (training threads, 2), SEED (1),
#        SPEED_THREADS ("1 2"), BATCHES ("64 1"), HEAD (sentences of the batch-1 runs, 200; BASE_HEAD, 16, in
#        base_speed),
#        ROUNDS (runs of each speed cell, round-robin over the models; the median is reported; 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-work/bench_pack}
UPDATES=${UPDATES:-1000}
THREADS=${THREADS:-2}
SEED=${SEED:-1}
SPEED_THREADS=${SPEED_THREADS:-1 2}
BATCHES=${BATCHES:-64 1}
HEAD=${HEAD:-200}
ROUNDS=${ROUNDS:-1}
source scripts/bench/common.sh
QAT=(--criterion qat_label_smoothed_cross_entropy --quant-start-update 100)

step_sizes() {  # bytes on disk at Transformer-base shapes (32k joined vocabulary, shared embeddings)
  local dir=$WORK/sizes
  mkdir -p "$dir/raw"
  python - "$dir/raw" <<'EOF'
import sys
words = [f"w{i}" for i in range(32000 - 4)]  # + fairseq's 4 special symbols = 32,000 entries
with open(f"{sys.argv[1]}/dict.txt", "w") as f:
    f.writelines(f"{w} 1\n" for w in words)
for split in ("train", "valid"):
    for lang in ("en", "de"):
        with open(f"{sys.argv[1]}/{split}.{lang}", "w") as f:
            f.writelines(" ".join(words[i:i + 12]) + "\n" for i in range(0, 240, 12))
EOF
  [ -s "$dir/bin/dict.de.txt" ] || fairseq-preprocess --source-lang en --target-lang de --trainpref "$dir/raw/train" \
    --validpref "$dir/raw/valid" --srcdict "$dir/raw/dict.txt" --tgtdict "$dir/raw/dict.txt" --destdir "$dir/bin" \
    --workers 1 > /dev/null
  local common=(--share-all-embeddings --optimizer adam --lr 1e-4 --max-tokens 2000 --max-update 1 --cpu --seed 1
                --no-epoch-checkpoints --num-workers 0 --user-dir fq_plugin --log-format simple --disable-validation)
  size_run() {  # size_run NAME ARGS...: one update (quantization on), then fq-pack
    local name=$1; shift
    [ -s "$dir/$name/checkpoint_last.pt" ] || fairseq-train "$dir/bin" --save-dir "$dir/$name" "${common[@]}" "$@" \
      > "$dir/$name.log" 2>&1
  }
  size_run float --arch transformer_wmt_en_de --criterion cross_entropy
  size_run int8 --arch fq_transformer_wmt_en_de --criterion qat_label_smoothed_cross_entropy --quant-start-update 0
  size_run bitnet_emb8 --arch bitnet_transformer_wmt_en_de --criterion qat_label_smoothed_cross_entropy \
    --quant-start-update 0 --embedding-bits 8
  # One range per activation point, as fqt_deploy: every GEMM of the packed model runs in int8 (base_speed).
  size_run int8_deploy --arch fq_transformer_wmt_en_de --criterion qat_label_smoothed_cross_entropy \
    --quant-start-update 0 --quant-bucketing weight
  size_run bmt_emb32 --arch bmt_transformer_wmt_en_de --criterion qat_label_smoothed_cross_entropy --quant-start-update 0
  # BitNet whose output projection also reads 8-bit per-token inputs: the packed vocabulary projection runs in int8.
  size_run bitnet_out8 --arch bitnet_transformer_wmt_en_de --criterion qat_label_smoothed_cross_entropy \
    --quant-start-update 0 --embedding-bits 8 --output-input-bits 8
  # Ternary weights with BitNet's 8-bit per-token inputs: both bit planes run in one W1A8 kernel pass.
  size_run ternary_emb8 --arch bitnet_transformer_wmt_en_de --criterion qat_label_smoothed_cross_entropy \
    --quant-start-update 0 --weight-quant ternary --embedding-bits 8
  # The float file a user ships has no optimizer state; the packed files have none either.
  python - "$dir/float/checkpoint_last.pt" "$dir/float/model.pt" <<'EOF'
import sys, torch, fq_plugin  # noqa: F401  (fairseq checkpoint types for the safe loader)
state = torch.load(sys.argv[1], map_location="cpu")
state["last_optimizer_state"] = None
torch.save(state, sys.argv[2])
EOF
  local float_bytes
  float_bytes=$(stat -c %s "$dir/float/model.pt")
  {
    echo "| model (Transformer-base, 32k vocabulary, shared embeddings) | file | bytes | × float |"
    echo "|---|---|---|---|"
    echo "| float fairseq transformer_wmt_en_de (no optimizer state) | model.pt | $float_bytes | 1.000 |"
    for name in int8 bitnet_emb8 bitnet_out8 bmt_emb32 ternary_emb8; do
      [ -s "$dir/$name/packed.pt" ] || fq-pack "$dir/$name/checkpoint_last.pt" "$dir/$name/packed.pt" 2> /dev/null
      local bytes
      bytes=$(stat -c %s "$dir/$name/packed.pt")
      echo "| $name | packed.pt | $bytes | $(echo "scale=3; $bytes / $float_bytes" | bc) |"
    done
  } | tee "$WORK/sizes.md"
}

step_train() {
  train float --arch transformer --criterion label_smoothed_cross_entropy --max-update "$UPDATES"
  # One range per activation point (weights per row): every GEMM input has a single grid, so the packed
  # model runs int8 GEMMs throughout (the paper's per-feature buckets would leave most GEMMs in float).
  train fqt_deploy --arch fq_transformer "${QAT[@]}" --quant-bucketing weight --max-update "$UPDATES"
  train bitnet --arch bitnet_transformer "${QAT[@]}" --max-update "$UPDATES"
  for name in fqt_deploy bitnet; do
    [ -s "$WORK/$name/packed.pt" ] || fq-pack "$WORK/$name/checkpoint_last.pt" "$WORK/$name/packed.pt"
  done
}

CHECKPOINTS=(float:float/checkpoint_last.pt fqt_deploy:fqt_deploy/checkpoint_last.pt
             fqt_deploy_packed:fqt_deploy/packed.pt bitnet:bitnet/checkpoint_last.pt bitnet_packed:bitnet/packed.pt)

step_quality() {
  {
    echo "| model | BLEU (sacrebleu) | hypotheses identical to the unpacked checkpoint | file bytes |"
    echo "|---|---|---|---|"
    for entry in "${CHECKPOINTS[@]}"; do
      local name=${entry%%:*} ckpt=$WORK/${entry#*:} same="–"
      read -r bleu _ bytes < <(FQ_USER_DIR=fq_plugin bash scripts/translate_and_score.sh "$DATA/data-bin" "$ckpt" \
        "$DATA/raw/test.de" "$WORK/quality/$name")
      if [[ $name == *_packed ]]; then
        same=$(python - "$WORK/quality/${name%_packed}/generate.out" "$WORK/quality/$name/generate.out" <<'EOF'
import re, sys
hyps = [dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", open(p).read(), re.M)) for p in sys.argv[1:]]
print(f"{sum(hyps[0][k] == hyps[1].get(k) for k in hyps[0])} / {len(hyps[0])}")
EOF
)
      fi
      echo "| $name | $bleu | $same | $bytes |"
    done
  } | tee "$WORK/quality.md"
}

median_run() {  # "sps tps;sps tps;...": the run with the median tokens/s
  tr ';' '\n' <<< "$1" | grep . | sort -k2 -g | awk '{r[NR] = $0} END {print r[int((NR + 1) / 2)]}'
}
tokens_per_s() { grep -o '[0-9.]* sentences/s, [0-9.]* tokens/s' "$1" | tail -1 | awk '{print $1, $3}'; }

speed_grid() {  # speed_grid ROOT OUT: the speed table of the caller's models (name:path under ROOT; ct2_int8:DIR is
  # CTranslate2) for every SPEED_THREADS x BATCHES cell. Reads the caller's locals: models, data/source/count (the
  # test set of batch > 1), data1/source1/count1 (batch 1), gen_len/ct2_len (extra length options). Each cell runs
  # every model ROUNDS times round-robin, so that a change of machine load hits every model alike; median round.
  local root=$1 out=$2
  mkdir -p "$out"
  echo "| threads | batch | sentences | model | sentences/s | tokens/s | × float fairseq |"
  echo "|---|---|---|---|---|---|---|"
  for threads in $SPEED_THREADS; do
    for batch in $BATCHES; do
      local d=$data src=$source n=$count float_tps=""
      if [ "$batch" = 1 ]; then d=$data1 src=$source1 n=$count1; fi
      local -A runs=()
      for round in $(seq "$ROUNDS"); do
        for entry in "${models[@]}"; do
          local name=${entry%%:*} log=$out/${entry%%:*}.t$threads.b$batch.r$round.log
          if [ "$name" = ct2_int8 ]; then
            python scripts/bench/ct2_translate.py translate --model "$root/${entry#*:}" --source "$src" \
              --output "$log.hyp" --beam 4 --lenpen 0.6 --batch-size "$batch" --threads "$threads" \
              "${ct2_len[@]}" > "$log" 2>&1
          else
            local heap=()  # NAME_heap: fairseq-generate with the malloc thresholds that packed checkpoints set
            [[ $name != *_heap ]] || heap=(MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824)
            env "${heap[@]}" OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads fairseq-generate "$d" \
              --user-dir fq_plugin --path "$root/${entry#*:}" --gen-subset test --beam 4 --lenpen 0.6 \
              --batch-size "$batch" --required-batch-size-multiple 1 "${gen_len[@]}" --cpu > "$log.out" 2> "$log"
          fi
          runs[$name]+="$(tokens_per_s "$log");"
        done
      done
      for entry in "${models[@]}"; do
        local name=${entry%%:*}
        read -r sps tps < <(median_run "${runs[$name]}")
        [ -n "$float_tps" ] || float_tps=$tps
        echo "| $threads | $batch | $n | $name | $sps | $tps | $(echo "scale=2; $tps / $float_tps" | bc) |"
      done
      unset runs
    done
  done
}

step_speed() {
  # batch-1 runs translate the first $HEAD test sentences (a test set of their own); batch 64 the whole set
  local head=$WORK/head
  if [ ! -s "$head/data-bin/test.en-de.en.bin" ]; then
    mkdir -p "$head"
    for lang in en de; do head -n "$HEAD" "$DATA/bpe/test.$lang" > "$head/test.$lang"; done
    fairseq-preprocess --source-lang en --target-lang de --testpref "$head/test" --destdir "$head/data-bin" \
      --srcdict "$DATA/data-bin/dict.en.txt" --tgtdict "$DATA/data-bin/dict.de.txt" --workers 1 > /dev/null
  fi
  python scripts/bench/ct2_translate.py convert --checkpoint "$WORK/float/checkpoint_last.pt" \
    --data-bin "$DATA/data-bin" --output-dir "$WORK/ct2_float"
  local models=("${CHECKPOINTS[@]}" ct2_int8:ct2_float) gen_len=() ct2_len=()
  local data=$DATA/data-bin source=$DATA/bpe/test.en count=1000
  local data1=$head/data-bin source1=$head/test.en count1=$HEAD
  speed_grid "$WORK" "$WORK/speed" | tee "$WORK/speed.md"
}

step_base_speed() {
  # fairseq-generate speed at Transformer-base shapes (d 512, FFN 2048, 6+6 layers, 32k vocabulary) on the
  # one-update models of step_sizes: their translations are meaningless, so every hypothesis is forced to exactly
  # $FIXED_LEN tokens (--min-len = --max-len-b) and all models do the same work. 128 sentences of 20 random words
  # at batch 64; the first $BASE_HEAD of them at batch 1.
  local dir=$WORK/sizes
  local fixed=${FIXED_LEN:-30} base_head=${BASE_HEAD:-16}
  if [ ! -s "$dir/bin/test.en-de.en.bin" ]; then
    python - "$dir/raw" <<'EOF2'
import random, sys
words = [line.split()[0] for line in open(f"{sys.argv[1]}/dict.txt")]
rng = random.Random(1)
for lang in ("en", "de"):
    with open(f"{sys.argv[1]}/test.{lang}", "w") as f:
        f.writelines(" ".join(rng.choice(words) for _ in range(20)) + "\n" for _ in range(128))
EOF2
    fairseq-preprocess --source-lang en --target-lang de --testpref "$dir/raw/test" --srcdict "$dir/raw/dict.txt" \
      --tgtdict "$dir/raw/dict.txt" --destdir "$dir/bin" --workers 1 > /dev/null
  fi
  if [ ! -s "$dir/head/bin/test.en-de.en.bin" ]; then
    mkdir -p "$dir/head"
    for lang in en de; do head -n "$base_head" "$dir/raw/test.$lang" > "$dir/head/test.$lang"; done
    fairseq-preprocess --source-lang en --target-lang de --testpref "$dir/head/test" --srcdict "$dir/raw/dict.txt" \
      --tgtdict "$dir/raw/dict.txt" --destdir "$dir/head/bin" --workers 1 > /dev/null
  fi
  [ -s "$dir/bitnet_out8/packed.pt" ] || step_sizes  # the one-update models, packed
  [ -s "$dir/int8_deploy/packed.pt" ] || fq-pack "$dir/int8_deploy/checkpoint_last.pt" "$dir/int8_deploy/packed.pt"
  python scripts/bench/ct2_translate.py convert --checkpoint "$dir/float/model.pt" --data-bin "$dir/bin" \
    --output-dir "$dir/ct2_float"
  local models=(float:float/model.pt float_heap:float/model.pt int8_packed:int8_deploy/packed.pt
                bitnet_packed:bitnet_emb8/packed.pt bitnet_out8_packed:bitnet_out8/packed.pt
                ternary_packed:ternary_emb8/packed.pt ct2_int8:ct2_float)
  local gen_len=(--min-len "$fixed" --max-len-a 0 --max-len-b "$fixed") ct2_len=(--min-len "$fixed" --max-len "$fixed")
  local data=$dir/bin source=$dir/raw/test.en count=128
  local data1=$dir/head/bin source1=$dir/head/test.en count1=$base_head
  speed_grid "$dir" "$WORK/base_speed" | tee "$WORK/base_speed.md"
}

STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(sizes train quality speed base_speed)
for step in "${STEPS[@]}"; do "step_$step"; done
