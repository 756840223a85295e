# Shared functions of the translation recipes (scripts/wmt14_*/, scripts/prepare_data.sh,
# scripts/translate_and_score.sh). Source it from bash with `set -euo pipefail`; it runs nothing by itself.
#
# Every command goes through `run "<shell command>"`: it is printed (stderr, "+ " prefix) and executed, or with
# DRY_RUN=1 only printed (stdout, as it would run). Every step writes its output to a temporary name and
# moves it into place when complete, and is skipped when its output exists, so an interrupted run resumes.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DRY_RUN=${DRY_RUN:-0}
PYTHON=${PYTHON:-python3}

die() { echo "error: $*" >&2; exit 1; }
q() { printf '%q' "$1"; }                    # shell-quote one word for a command string
qa() { local a out=""; for a in "$@"; do out+=" $(q "$a")"; done; printf '%s' "${out# }"; }  # quote words
say() { if [ "$DRY_RUN" = 1 ]; then echo "# $*"; else echo "== $*" >&2; fi; }

run() {  # run "<shell command>": print it, then execute it unless DRY_RUN=1
  if [ "$DRY_RUN" = 1 ]; then
    echo "$1"
  else
    [ "${VERBOSE:-1}" = 0 ] || echo "+ $1" >&2
    eval "$1"
  fi
}

done_or() {  # done_or FILE "<what>": true (and says so) when FILE exists and is not empty
  if [ -s "$1" ]; then [ "${VERBOSE:-1}" = 0 ] || say "done, skipped: $2 ($1 exists)"; return 0; fi
  return 1
}

# ---------------------------------------------------------------------------------------------------------
# Corpus preparation: tokenize (sacremoses), joint BPE (subword-nmt), clean, binarize (fairseq-preprocess).
# Input: $OUT/raw/{train,valid,test}.{SRC_LANG,TGT_LANG}. Variables: SRC_LANG TGT_LANG BPE_MERGES WORKERS
# NORMALIZE (1: sacremoses normalize first) TOKENIZE_ARGS (extra `sacremoses tokenize` flags, e.g. -a)
# CLEAN_MAX_LEN (0: no cleaning; else drop training pairs longer than this after BPE, or with a length ratio
# above CLEAN_RATIO, as Moses' clean-corpus-n.perl).
# ---------------------------------------------------------------------------------------------------------
prepare_corpus() {  # prepare_corpus OUT
  local out=$1 split lang src=${SRC_LANG:-en} tgt=${TGT_LANG:-de} merges=${BPE_MERGES:-10000}
  local workers=${WORKERS:-2} tokargs=${TOKENIZE_ARGS:-} clean=${CLEAN_MAX_LEN:-0} ratio=${CLEAN_RATIO:-1.5}
  run "mkdir -p $(q "$out/tok") $(q "$out/bpe")"
  for split in train valid test; do
    for lang in "$src" "$tgt"; do
      local in=$out/raw/$split.$lang dst=$out/tok/$split.$lang read
      read="< $(q "$in") "
      [ "${NORMALIZE:-0}" = 1 ] && read="sacremoses -q -l $lang -j $workers normalize -p -c < $(q "$in") | "
      done_or "$dst" "tokenize $split.$lang" && continue
      run "${read}sacremoses -q -l $lang -j $workers tokenize -x $tokargs> $(q "$dst.tmp") && mv $(q "$dst.tmp") $(q "$dst")"
    done
  done
  if ! done_or "$out/bpe/codes" "learn joint BPE"; then
    run "subword-nmt learn-joint-bpe-and-vocab -s $merges -t --input $(q "$out/tok/train.$src") $(q "$out/tok/train.$tgt") -o $(q "$out/bpe/codes.tmp") --write-vocabulary $(q "$out/bpe/vocab.$src") $(q "$out/bpe/vocab.$tgt") && mv $(q "$out/bpe/codes.tmp") $(q "$out/bpe/codes")"
  fi
  for split in train valid test; do
    for lang in "$src" "$tgt"; do
      local dst=$out/bpe/$split.$lang
      done_or "$dst" "apply BPE $split.$lang" && continue
      run "subword-nmt apply-bpe -c $(q "$out/bpe/codes") --vocabulary $(q "$out/bpe/vocab.$lang") --vocabulary-threshold 20 < $(q "$out/tok/$split.$lang") > $(q "$dst.tmp") && mv $(q "$dst.tmp") $(q "$dst")"
    done
  done
  local trainpref=$out/bpe/train
  if [ "$clean" != 0 ]; then
    trainpref=$out/bpe/train.clean
    if ! done_or "$trainpref.$tgt" "clean training pairs"; then
      # Keep a pair when both sides have 1..CLEAN_MAX_LEN tokens and neither is CLEAN_RATIO times the other.
      run "paste $(q "$out/bpe/train.$src") $(q "$out/bpe/train.$tgt") | awk -F '\t' -v max=$clean -v r=$ratio '{ns=split(\$1,a,\" \"); nt=split(\$2,b,\" \"); if (ns>=1 && nt>=1 && ns<=max && nt<=max && ns<=r*nt && nt<=r*ns) print}' > $(q "$trainpref.tsv.tmp") && cut -f1 $(q "$trainpref.tsv.tmp") > $(q "$trainpref.$src") && cut -f2 $(q "$trainpref.tsv.tmp") > $(q "$trainpref.$tgt.tmp") && rm $(q "$trainpref.tsv.tmp") && mv $(q "$trainpref.$tgt.tmp") $(q "$trainpref.$tgt")"
    fi
  fi
  if ! done_or "$out/data-bin/dict.$src.txt" "fairseq-preprocess"; then
    run "rm -rf $(q "$out/data-bin.tmp") && fairseq-preprocess --source-lang $src --target-lang $tgt --trainpref $(q "$trainpref") --validpref $(q "$out/bpe/valid") --testpref $(q "$out/bpe/test") --destdir $(q "$out/data-bin.tmp") --joined-dictionary --workers $workers > $(q "$out/preprocess.log") && rm -rf $(q "$out/data-bin") && mv $(q "$out/data-bin.tmp") $(q "$out/data-bin")"
  fi
}

# ---------------------------------------------------------------------------------------------------------
# Translation and scoring.
# ---------------------------------------------------------------------------------------------------------
generate_test() {  # generate_test DATA_BIN CHECKPOINT OUT_DIR [extra fairseq-generate args]
  # Beam 4, length penalty 0.6 (Vaswani et al.; seed 003), BPE removed. GEN_DEVICE_ARGS defaults to --cpu.
  # --required-batch-size-multiple 1: with the default 8, this fairseq drops the last (longest) test batch.
  local data=$1 ckpt=$2 out=$3; shift 3
  done_or "$out/generate.out" "translate with $ckpt" && return 0
  run "mkdir -p $(q "$out") && fairseq-generate $(q "$data") --user-dir $(q "${FQ_USER_DIR:-fq_plugin}") --path $(q "$ckpt") --gen-subset test --beam 4 --lenpen 0.6 --max-tokens ${GEN_MAX_TOKENS:-6000} --required-batch-size-multiple 1 --remove-bpe ${GEN_DEVICE_ARGS---cpu} $(qa "$@") > $(q "$out/generate.out.tmp") 2> $(q "$out/generate.log") && mv $(q "$out/generate.out.tmp") $(q "$out/generate.out")"
}

score_test() {  # score_test OUT_DIR REFERENCE CHECKPOINT TGT_LANG
  # Detokenized sacrebleu (13a) against the raw reference, and tokenized BLEU: both sides Moses-tokenized,
  # hyphenated compounds split as ##AT##-##AT## for German (the classic get_ende_bleu.sh / tensor2tensor way,
  # comparable with the papers' multi-bleu numbers), scored with sacrebleu --tokenize none.
  # Writes OUT_DIR/scores.txt ("key value" lines, read by fq-report).
  local out=$1 ref=$2 ckpt=$3 lang=$4 split_re=""
  done_or "$out/scores.txt" "score $out" && return 0
  [ "$lang" = de ] && split_re=" | sed -E 's/(\\S)-(\\S)/\\1 ##AT##-##AT## \\2/g'"
  run "grep ^H- $(q "$out/generate.out") | sed 's/^H-//' | sort -n -k1,1 | cut -f3 | sacremoses -q -l $lang detokenize > $(q "$out/hyp.txt")"
  run "sacremoses -q -l $lang tokenize -x < $(q "$out/hyp.txt")$split_re > $(q "$out/hyp.tok") && sacremoses -q -l $lang tokenize -x < $(q "$ref")$split_re > $(q "$out/ref.tok")"
  run "test \$(wc -l < $(q "$out/hyp.txt")) -eq \$(wc -l < $(q "$ref")) || { echo \"error: $(q "$out/hyp.txt") has \$(wc -l < $(q "$out/hyp.txt")) lines, the reference $(q "$ref") \$(wc -l < $(q "$ref"))\" >&2; exit 1; }"
  run "b=\$(sacrebleu $(q "$ref") -i $(q "$out/hyp.txt") -b) && bt=\$(sacrebleu $(q "$out/ref.tok") -i $(q "$out/hyp.tok") --tokenize none -b) && tps=\$(grep -o '[0-9.]* tokens/s' $(q "$out/generate.log") | tail -1 | cut -d' ' -f1) && printf 'bleu %s\\nbleu_tok %s\\ntokens_per_s %s\\ncheckpoint_bytes %s\\ncheckpoint %s\\n' \"\$b\" \"\$bt\" \"\$tps\" \"\$(stat -c %s $(q "$ckpt"))\" $(q "$ckpt") > $(q "$out/scores.txt.tmp") && mv $(q "$out/scores.txt.tmp") $(q "$out/scores.txt")"
}

# ---------------------------------------------------------------------------------------------------------
# WMT14 recipes (scripts/wmt14_en_de/, scripts/wmt14_en_fr/). A pair script sets PAIR, SRC_LANG, TGT_LANG,
# BPE_MERGES_DEFAULT, ARCHIVES (paths under WMT_URL), TRAIN_CORPORA (paths in the extracted archives, ":gz" when
# gzipped), VALID_PREFIX, TEST_SGM_SRC, TEST_SGM_REF, then calls `recipe_main <stage|all> "$@"`.
# ---------------------------------------------------------------------------------------------------------
ALL_STAGES="prepare train prune pack generate score"
# Trainings in dependency order (ptq8_* need transformer_*, bit_w1a1 needs bit_w1a8, bit_split needs bit_ternary).
ALL_MODELS="transformer_base fqt8_base ptq8_base transformer_big fqt8_big ptq8_big bmt_w1_base bmt_w1a1_base
bitnet_base bit_w1a8_base bit_w1a1_base bit_ternary_base bit_split_base"
declare -A SPLIT_FROM=([bit_split_base]=bit_ternary_base)   # fq-split makes the first checkpoint from this one

recipe_help() {
  cat <<HELP
WMT14 ${SRC_LANG^^}-${TGT_LANG^^} recipe: $(basename "$0") runs stage(s): $1.
Usage: $(basename "$0") [--dry-run] [--help]        (configure with the variables below)

Steps (scripts in $(dirname "$0")/: run.sh runs STAGES in order; prepare.sh ... score.sh run one each):
  prepare   download the WMT14 archives (or take them from ARCHIVES_DIR), extract, assemble train (${TRAIN_CORPORA[*]%%:*}),
            valid (newstest2013) and test (newstest2014); sacremoses normalize + tokenize -a, joint BPE
            (subword-nmt, BPE_MERGES), clean (1..250 tokens, ratio 1.5), fairseq-preprocess --joined-dictionary
  train     fairseq-train each of MODELS with the hyperparameters of configs/wmt14_${PAIR}_<model>.yaml
            (the same file fairseq-hydra-train runs); an interrupted training resumes from checkpoint_last.pt
  prune     adaptive FFN node pruning (task fq_pruning) of each of PRUNE_MODELS -> <model>_pruned
  pack      fq-pack each of PACK_MODELS into <model>/packed.pt (low-bit storage read by fairseq-generate)
  generate  fairseq-generate newstest2014 with every trained, pruned and packed model (beam 4, lenpen 0.6)
  score     sacrebleu on detokenized output, tokenized BLEU$( [ "$TGT_LANG" = de ] && echo " with compound splitting") (comparable with
            the multi-bleu numbers of the papers), then fq-report: results/report.md and results/report.png

Variables (current value):
  WORK_DIR=$WORK_DIR   checkpoints/, results/
  DATA_DIR=$DATA_DIR   orig/ raw/ tok/ bpe/ data-bin/
  ARCHIVES_DIR=${ARCHIVES_DIR:-}   directory with already downloaded archives (used instead of downloading)
  DOWNLOAD_DIR=$DOWNLOAD_DIR   where missing archives are downloaded (resumable: <name>.part)
  WMT_URL=$WMT_URL   mirror of the archives: $(printf '%s ' "${ARCHIVES[@]}")
  NUM_GPUS=$NUM_GPUS   0 = CPU; the update frequency is scaled so that the effective batch stays the same
  STAGES=$STAGES
  MODELS=$(echo $MODELS)
  PRUNE_MODELS=$PRUNE_MODELS   PACK_MODELS=$PACK_MODELS
  EVAL_CHECKPOINT=$EVAL_CHECKPOINT   BPE_MERGES=$BPE_MERGES   WORKERS=$WORKERS
  smoke tests: ARCH_VARIANT (e.g. tiny), MAX_UPDATE, TRAIN_OVERRIDES and TRAIN_OVERRIDES_<model> (Hydra key=value
            pairs applied to every / one training, e.g. 'optimization.lr=[0.005]'; the later ones win)
Every step skips work whose output exists; --dry-run prints the commands in order and runs nothing.
HELP
}

recipe_defaults() {
  WORK_DIR=${WORK_DIR:-work/wmt14_$PAIR}
  DATA_DIR=${DATA_DIR:-$WORK_DIR/data}
  DOWNLOAD_DIR=${DOWNLOAD_DIR:-$DATA_DIR/archives}
  WMT_URL=${WMT_URL:-https://www.statmt.org}
  if [ -z "${NUM_GPUS:-}" ]; then NUM_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
  MODELS=${MODELS-$ALL_MODELS}
  PRUNE_MODELS=${PRUNE_MODELS-fqt8_base fqt8_big}
  PACK_MODELS=${PACK_MODELS-fqt8_base fqt8_base_pruned ptq8_base fqt8_big fqt8_big_pruned ptq8_big bmt_w1_base bmt_w1a1_base bitnet_base bit_w1a1_base bit_split_base}
  EVAL_CHECKPOINT=${EVAL_CHECKPOINT:-checkpoint_last.pt}
  BPE_MERGES=${BPE_MERGES:-$BPE_MERGES_DEFAULT}
  WORKERS=${WORKERS:-$(nproc)}
}

recipe_main() {  # recipe_main <stage|all> [--dry-run] [--help]
  local stage_arg=$1; shift
  recipe_defaults
  if [ "$stage_arg" = all ]; then STAGES=${STAGES:-$ALL_STAGES}; else STAGES=$stage_arg; fi
  while [ $# -gt 0 ]; do
    case $1 in
      -h|--help) recipe_help "$STAGES"; exit 0 ;;
      -n|--dry-run) DRY_RUN=1 ;;
      *) die "unknown argument '$1' (see --help; the recipe is configured with variables)" ;;
    esac
    shift
  done
  [[ $NUM_GPUS =~ ^[0-9]+$ ]] || die "NUM_GPUS must be a number >= 0, got '$NUM_GPUS'"
  local s m
  for s in $STAGES; do [[ " $ALL_STAGES " == *" $s "* ]] || die "unknown stage '$s' in STAGES (known: $ALL_STAGES)"; done
  for m in $MODELS $PRUNE_MODELS; do
    [ -f "$REPO_ROOT/configs/wmt14_${PAIR}_$m.yaml" ] || die "unknown model '$m': no configs/wmt14_${PAIR}_$m.yaml"
  done
  # Absolute paths: the commands run from the repository root (where --user-dir fq_plugin is).
  WORK_DIR=$(realpath -m "$WORK_DIR") DATA_DIR=$(realpath -m "$DATA_DIR") DOWNLOAD_DIR=$(realpath -m "$DOWNLOAD_DIR")
  if [ -n "${ARCHIVES_DIR:-}" ]; then
    [ -d "$ARCHIVES_DIR" ] || die "ARCHIVES_DIR=$ARCHIVES_DIR is not a directory"
    ARCHIVES_DIR=$(realpath "$ARCHIVES_DIR")
  fi
  export WORK_DIR DATA_DIR   # the configs read them (${oc.env:WORK_DIR,...})
  cd "$REPO_ROOT"
  CKPT_DIR=$WORK_DIR/checkpoints RESULTS_DIR=$WORK_DIR/results
  GEN_DEVICE_ARGS=""; [ "$NUM_GPUS" = 0 ] && GEN_DEVICE_ARGS="--cpu"
  for s in $STAGES; do "stage_$s"; done
}

stage_prepare() {
  local path f a url c lang split
  say "prepare: archives"
  for path in "${ARCHIVES[@]}"; do
    f=$(basename "$path") url=$WMT_URL/$path
    if [ -n "${ARCHIVES_DIR:-}" ] && [ -s "$ARCHIVES_DIR/$f" ]; then
      a=$ARCHIVES_DIR/$f
    else
      a=$DOWNLOAD_DIR/$f
      if ! done_or "$a" "download $f"; then
        run "mkdir -p $(q "$DOWNLOAD_DIR") && curl -fL --retry 2 --connect-timeout 20 -C - -o $(q "$a.part") $(q "$url") && mv $(q "$a.part") $(q "$a")" \
          || die "could not download $url (no network?). Download the archives listed in --help on a machine that \
is online, put them in one directory and rerun with ARCHIVES_DIR=<that directory>; a partial download stays in \
$a.part and resumes on the next run."
      fi
    fi
    done_or "$DATA_DIR/orig/.$f.extracted" "extract $f" && continue
    run "mkdir -p $(q "$DATA_DIR/orig") && tar -xf $(q "$a") -C $(q "$DATA_DIR/orig") && date > $(q "$DATA_DIR/orig/.$f.extracted")"
  done
  say "prepare: assemble train (${TRAIN_CORPORA[*]%%:*}), valid ($VALID_PREFIX), test (newstest2014)"
  run "mkdir -p $(q "$DATA_DIR/raw")"
  for lang in "$SRC_LANG" "$TGT_LANG"; do
    local dst=$DATA_DIR/raw/train.$lang parts=""
    for c in "${TRAIN_CORPORA[@]}"; do
      if [[ $c == *:gz ]]; then parts+="zcat $(q "$DATA_DIR/orig/${c%:gz}.$lang.gz"); "
      else parts+="cat $(q "$DATA_DIR/orig/$c.$lang"); "; fi
    done
    done_or "$dst" "assemble train.$lang" || run "{ $parts} > $(q "$dst.tmp") && mv $(q "$dst.tmp") $(q "$dst")"
    dst=$DATA_DIR/raw/valid.$lang
    done_or "$dst" "valid.$lang" || run "cp $(q "$DATA_DIR/orig/$VALID_PREFIX.$lang") $(q "$dst.tmp") && mv $(q "$dst.tmp") $(q "$dst")"
    local sgm=$TEST_SGM_SRC; [ "$lang" = "$TGT_LANG" ] && sgm=$TEST_SGM_REF
    dst=$DATA_DIR/raw/test.$lang
    done_or "$dst" "test.$lang" || run "grep '<seg id' $(q "$DATA_DIR/orig/$sgm") | sed -e 's/<seg id=\"[0-9]*\">\\s*//' -e 's/\\s*<\\/seg>\\s*\$//' > $(q "$dst.tmp") && mv $(q "$dst.tmp") $(q "$dst")"
  done
  for split in train valid test; do
    run "test \$(wc -l < $(q "$DATA_DIR/raw/$split.$SRC_LANG")) -eq \$(wc -l < $(q "$DATA_DIR/raw/$split.$TGT_LANG")) || { echo 'error: $split.$SRC_LANG and $split.$TGT_LANG differ in length (a damaged archive?)' >&2; exit 1; }"
  done
  say "prepare: tokenize, BPE ($BPE_MERGES merges), clean, binarize"
  NORMALIZE=1 TOKENIZE_ARGS=-a CLEAN_MAX_LEN=250 CLEAN_RATIO=1.5 prepare_corpus "$DATA_DIR"
}

recipe_config() {  # recipe_config MODEL: sets save_dir, needs, train_args, hydra_cmd from the model's YAML
  local cmd=("$PYTHON" "$REPO_ROOT/scripts/lib/recipe_args.py" --config-name "wmt14_${PAIR}_$1" --format shell
             --num-gpus "$NUM_GPUS") o shell
  [ -n "${ARCH_VARIANT:-}" ] && cmd+=(--arch-variant "$ARCH_VARIANT")
  local per_model=TRAIN_OVERRIDES_$1
  [ -n "${MAX_UPDATE:-}" ] && cmd+=(--override "optimization.max_update=$MAX_UPDATE")
  for o in ${TRAIN_OVERRIDES:-} ${!per_model:-}; do cmd+=(--override "$o"); done  # later ones win
  shell=$("${cmd[@]}") || die "cannot read configs/wmt14_${PAIR}_$1.yaml (see above)"
  eval "$shell"
}

train_one() {  # train_one MODEL DONE_FILE VERB
  local m=$1 done_file=$2 verb=$3 need
  recipe_config "$m"
  done_file=${done_file//@SAVE_DIR@/$save_dir}
  done_or "$done_file" "$verb $m" && return 0
  say "$verb $m  (same as: $hydra_cmd)"
  if [ -n "${SPLIT_FROM[$m]:-}" ]; then  # ternary weight splitting makes the starting checkpoint
    local init=$save_dir/split_init.pt
    done_or "$init" "fq-split for $m" \
      || run "mkdir -p $(q "$save_dir") && fq-split $(q "$CKPT_DIR/${SPLIT_FROM[$m]}/$EVAL_CHECKPOINT") $(q "$save_dir/split_init.tmp.pt") && mv $(q "$save_dir/split_init.tmp.pt") $(q "$init")"
  fi
  if [ "$DRY_RUN" != 1 ]; then
    for need in "${needs[@]}"; do
      [ -s "$need" ] || die "$m needs $need: train that model first (add it to MODELS before $m)"
    done
  fi
  run "mkdir -p $(q "$save_dir") && fairseq-train $(qa "${train_args[@]}") 2>&1 | tee -a $(q "$save_dir/train.log")"
  [[ $done_file == */train.done ]] && run "date > $(q "$done_file")"
  return 0
}

stage_train() {
  local m
  for m in $MODELS; do train_one "$m" "@SAVE_DIR@/train.done" train; done
}

stage_prune() {
  local m
  for m in $PRUNE_MODELS; do train_one "${m}_pruned" "@SAVE_DIR@/checkpoint_pruned.pt" prune; done
}

final_checkpoint() {  # final_checkpoint MODEL: the checkpoint a model's training or pruning ends with
  if [[ $1 == *_pruned ]]; then echo "$CKPT_DIR/$1/checkpoint_pruned.pt"; else echo "$CKPT_DIR/$1/$EVAL_CHECKPOINT"; fi
}

stage_pack() {
  local m src dst
  for m in $PACK_MODELS; do
    src=$(final_checkpoint "$m") dst=$CKPT_DIR/$m/packed.pt
    done_or "$dst" "pack $m" && continue
    [ "$DRY_RUN" = 1 ] || [ -s "$src" ] || die "cannot pack $m: $src is missing (train or prune it first)"
    run "fq-pack $(q "$src") $(q "$CKPT_DIR/$m/packed.tmp.pt") && mv $(q "$CKPT_DIR/$m/packed.tmp.pt") $(q "$dst")"
  done
}

eval_targets() {  # lines "name checkpoint" of everything the generate and score stages evaluate
  local m
  for m in $MODELS; do echo "$m $(final_checkpoint "$m")"; done
  for m in $PRUNE_MODELS; do echo "${m}_pruned $(final_checkpoint "${m}_pruned")"; done
  for m in $PACK_MODELS; do echo "${m}_packed $CKPT_DIR/$m/packed.pt"; done
}

stage_generate() {
  local name ckpt
  while read -r name ckpt; do
    [ "$DRY_RUN" = 1 ] || [ -s "$ckpt" ] || die "cannot translate with $name: $ckpt is missing (run the stage that makes it, or drop $name from MODELS/PRUNE_MODELS/PACK_MODELS)"
    generate_test "$DATA_DIR/data-bin" "$ckpt" "$RESULTS_DIR/$name"
  done < <(eval_targets)
}

stage_score() {
  local name ckpt runs=()
  while read -r name ckpt; do
    [ "$DRY_RUN" = 1 ] || [ -s "$RESULTS_DIR/$name/generate.out" ] || die "no translation of $name: run the generate stage first"
    score_test "$RESULTS_DIR/$name" "$DATA_DIR/raw/test.$TGT_LANG" "$ckpt" "$TGT_LANG"
    runs+=(--run "$name=$RESULTS_DIR/$name")
  done < <(eval_targets)
  run "fq-report $(qa "${runs[@]}") --title $(q "WMT14 ${SRC_LANG^^}-${TGT_LANG^^} newstest2014") --out $(q "$RESULTS_DIR/report")"
}
