"""Shared fixtures: tiny synthetic data, preprocessed once per session."""
import pytest

from helpers import preprocess, write_lexicon_corpus


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long runs, excluded from the default test run")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("lexicon")
    return preprocess(write_lexicon_corpus(root / "raw"), root / "bin")


