# WMT14 English->German: corpora and settings of the recipe (sourced by the scripts in this directory).
# Archives as in fairseq's examples/translation/prepare-wmt14en2de.sh; valid newstest2013, test newstest2014.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/recipe.sh"
PAIR=en_de SRC_LANG=en TGT_LANG=de BPE_MERGES_DEFAULT=32000
ARCHIVES=(wmt13/training-parallel-europarl-v7.tgz wmt13/training-parallel-commoncrawl.tgz
          wmt14/training-parallel-nc-v9.tgz wmt14/dev.tgz wmt14/test-full.tgz)
TRAIN_CORPORA=(training/europarl-v7.de-en commoncrawl.de-en training/news-commentary-v9.de-en)
VALID_PREFIX=dev/newstest2013
TEST_SGM_SRC=test-full/newstest2014-deen-src.en.sgm TEST_SGM_REF=test-full/newstest2014-deen-ref.de.sgm
