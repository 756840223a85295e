"""Loading of the optional C++/CUDA extension ``fq_plugin._C``: one warning per process when it is not used."""
import importlib.util
import os
import warnings

_STATE = {"module": None, "cause": None, "warned": False}
ISA_ENV = "FQ_PLUGIN_CPU_ISA"
INT8_GEMM_ENV = "FQ_PLUGIN_INT8_GEMM"
DISABLE_ENV = "FQ_PLUGIN_DISABLE_EXT"


def _load():
    """Import ``fq_plugin._C`` unless disabled; remember why not, and warn once."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        _STATE["cause"] = f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    else:
        if importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}._C") is None:
            _STATE["cause"] = "not built (run `python setup.py build_ext --inplace` or reinstall)"
        else:
            try:
                from .. import _C  # registers the fq_plugin:: ops and their CPU (and CUDA) kernels
                _STATE["module"] = _C
            except Exception as e:  # built against another torch, missing symbols: never break the package
                _STATE["cause"] = f"failed to load: {type(e).__name__}: {e}"
    if _STATE["module"] is None and not _STATE["warned"]:
        _STATE["warned"] = True
        warnings.warn(f"fq_plugin C++ extension {_STATE['cause']}; low-bit ops use the slow pure-PyTorch "
                      "reference", RuntimeWarning, stacklevel=3)
    _settings_from_env()


def _settings_from_env():
    for env, setter in ((ISA_ENV, "set_cpu_isa"), (INT8_GEMM_ENV, "set_int8_gemm")):
        value = os.environ.get(env)
        if not value or _STATE["module"] is None:
            continue
        try:
            getattr(_STATE["module"], setter)(value)
        except (ValueError, RuntimeError) as e:
            warnings.warn(f"{env}={value} ignored: {e}", RuntimeWarning, stacklevel=3)


def module():
    """The loaded extension module, or None."""
    return _STATE["module"]


def cause():
    """Why the extension is not used (None when it is)."""
    return _STATE["cause"]


_load()
