"""Install fq_plugin: ``pip install .`` (see README for the one-line set-up).

The C++/CUDA extension ``fq_plugin._C`` (low-bit kernels, sources in ``cuda/``) is built when torch is
importable at build time (``pip install --no-build-isolation``); a failed build prints one line and installs the
pure-Python package, whose ops then use the PyTorch reference. In a checkout: ``python setup.py build_ext --inplace``.
"""
import os
import platform
import subprocess
import sys

from setuptools import find_packages, setup

# ISA-specific kernel files: compiled with their own flags (and without torch headers) so the library still
# loads on any x86-64; the kernels are chosen at run time from what the CPU supports.
ISA_SOURCES = {
    "cuda/cpu_kernels_avx2.cpp": ["-mavx2", "-mfma", "-mpopcnt"],
    "cuda/cpu_kernels_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx512vpopcntdq",
                                    "-mpopcnt"],
}


def extension_setup():
    """``(ext_modules, cmdclass)`` for ``fq_plugin._C``; empty when torch cannot be imported here."""
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as e:  # e.g. an isolated build environment without torch
        print(f"fq_plugin: C++ extension not built (torch not importable at build time: {e}); "
              "using the pure-PyTorch reference ops", flush=True)
        return [], {}
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    linux = sys.platform.startswith("linux")
    # -g0: no debug info (Python's CFLAGS carry -g; it triples the compile time); at::parallel_for is OpenMP in headers;
    # -ffp-contract=off: a * b + c rounds twice, as ATen's separate ops do (the kernels write their FMAs explicitly)
    cxx = ["-O3", "-g0", "-ffp-contract=off"] + (["-fopenmp"] if linux else [])
    macros = [("FQ_HAVE_X86_KERNELS", None)] if x86 else []
    sources = ["cuda/fq_ops.cpp", "cuda/cpu_kernels_portable.cpp"]
    with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
                 and os.environ.get("FQ_PLUGIN_NO_CUDA", "0") == "0")
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"] if linux else [],
                  define_macros=macros, include_dirs=[os.path.abspath("cuda")])
    if with_cuda:
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-std=c++17", "-gencode", "arch=compute_80,code=sm_80",
                                                "-gencode", "arch=compute_90,code=sm_90"]
        kwargs["define_macros"] = macros + [("FQ_WITH_CUDA", None)]
        ext = CUDAExtension("fq_plugin._C", sources + ["cuda/fq_kernels.cu", "cuda/fq_ops_cuda.cpp"], **kwargs)
    else:
        ext = CppExtension("fq_plugin._C", sources, **kwargs)

    class BuildExt(BuildExtension):
        """Never fails the install: a broken extension build leaves the pure-Python package."""

        failed = ()

        def build_extension(self, ext):
            try:
                if x86:
                    ext.extra_objects = list(ext.extra_objects or []) + self.isa_objects()
                super().build_extension(ext)
            except Exception as e:
                self.failed = (*self.failed, ext.name)
                print(f"fq_plugin: C++ extension not built ({type(e).__name__}: {str(e).strip()[:300]}); "
                      "using the pure-PyTorch reference ops", flush=True)

        def copy_extensions_to_source(self):  # --inplace: copy only what was built
            built, self.extensions = self.extensions, [e for e in self.extensions if e.name not in self.failed]
            try:
                super().copy_extensions_to_source()
            finally:
                self.extensions = built

        def isa_objects(self):
            compiler = os.environ.get("CXX", "c++")
            objects = []
            for src, flags in ISA_SOURCES.items():
                obj = os.path.join(self.build_temp, "isa", os.path.basename(src) + ".o")
                os.makedirs(os.path.dirname(obj), exist_ok=True)
                cmd = [compiler, "-c", src, "-o", obj, "-O3", "-std=c++17", "-fPIC", "-ffp-contract=off",
                       "-DFQ_HAVE_X86_KERNELS", "-Icuda", *flags]
                print(" ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
                objects.append(obj)
            return objects

    return [ext], {"build_ext": BuildExt}


EXT_MODULES, CMDCLASS = extension_setup()

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
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3"]},
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
    entry_points={"console_scripts": ["fq-report = fq_plugin.report:cli_main", "fq-split = fq_plugin.split:main",
                                        "fq-pack = fq_plugin.pack:main"]},
)
