# Shared set-up of the ende-debian quality benchmarks (bench_fqt.sh, bench_binary.sh): data, the 2+2-layer
# d=128 model, the optimizer and a resumable train() that records the training time. Source it after
# setting WORK, UPDATES (per run, passed with --max-update), THREADS and SEED.
DATA=work/ende-debian
bash scripts/prepare_data.sh ../shared/data/ende-debian "$DATA"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
mkdir -p "$WORK"

MODEL=(--encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
       --encoder-layers 2 --decoder-layers 2 --encoder-attention-heads 4 --decoder-attention-heads 4
       --share-all-embeddings --dropout 0.1)
TRAIN=(--optimizer adam --adam-betas '(0.9,0.98)' --lr 0.003 --lr-scheduler inverse_sqrt --warmup-updates 300
       --clip-norm 0.0 --label-smoothing 0.1 --max-tokens 4096 --seed "$SEED" --cpu
       --no-epoch-checkpoints --save-interval-updates 200 --keep-interval-updates 1 --log-format simple
       --log-interval 50 --num-workers 0 --user-dir fq_plugin)

train() {  # train NAME ARGS...: fairseq-train into $WORK/NAME unless finished; resumes an interrupted run
  local name=$1; shift
  if [ ! -s "$WORK/$name/done" ]; then
    mkdir -p "$WORK/$name"
    fairseq-train "$DATA/data-bin" --save-dir "$WORK/$name" "${TRAIN[@]}" "${MODEL[@]}" "$@" 2>&1 \
      | tee -a "$WORK/$name/train.log"
    grep -o "done training in [0-9.]*" "$WORK/$name/train.log" | tail -1 | awk '{print $4}' > "$WORK/$name/done"
  fi
}
