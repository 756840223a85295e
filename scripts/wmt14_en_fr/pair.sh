# WMT14 English->French: corpora and settings of the recipe (sourced by the scripts in this directory).
# Archives as in fairseq's examples/translation/prepare-wmt14en2fr.sh; valid newstest2013, test newstest2014.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/recipe.sh"
PAIR=en_fr SRC_LANG=en TGT_LANG=fr BPE_MERGES_DEFAULT=40000
ARCHIVES=(wmt13/training-parallel-europarl-v7.tgz wmt13/training-parallel-commoncrawl.tgz
          wmt13/training-parallel-un.tgz wmt14/training-parallel-nc-v9.tgz wmt10/training-giga-fren.tar
          wmt14/dev.tgz wmt14/test-full.tgz)
TRAIN_CORPORA=(training/europarl-v7.fr-en commoncrawl.fr-en un/undoc.2000.fr-en training/news-commentary-v9.fr-en
               giga-fren.release2.fixed:gz)
VALID_PREFIX=dev/newstest2013
TEST_SGM_SRC=test-full/newstest2014-fren-src.en.sgm TEST_SGM_REF=test-full/newstest2014-fren-ref.fr.sgm
