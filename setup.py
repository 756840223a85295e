"""Install fq_plugin: ``pip install .`` (see README for the one-line set-up)."""
from setuptools import find_packages, setup

setup(
    name="fq_plugin",
    version="0.1.0",
    description="fairseq plugin for quantized and binarized Transformer translation (8-bit, ternary, 1-bit)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fq_plugin", "fq_plugin.*"]),
    python_requires=">=3.8",
    install_requires=[
        # PyPI's fairseq 0.12.2 does not import on Python >= 3.11; fairseq-fixed is the same package, patched.
        'fairseq-fixed==0.12.3.1; python_version >= "3.11"',
        'fairseq==0.12.2; python_version < "3.11"',
        "torch>=1.13",
        "hydra-core>=1.0.7",
        "sacrebleu>=2.0",
        "subword-nmt>=0.3.8",
        "sacremoses>=0.0.53",
        "matplotlib>=3.5",  # fq-report's plot
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["fq-report = fq_plugin.report:cli_main"]},
)
