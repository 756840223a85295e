"""Decoding keeps freed memory for reuse instead of giving it back to the kernel.

glibc's malloc returns a large freed block to the kernel (blocks above its mmap threshold, and the top of the heap
beyond its trim threshold), so the next tensor of the same size faults every page in again: about 8,000 page faults
and 10 ms for one (64 sentences x beam 4) x 32,000-word float tensor on the 2-core VM of BENCHMARKS.md, against
1.3 ms for the add that fills it. fairseq's beam search and the output projection allocate several such tensors per
decoder step. Raising both thresholds lets the process reuse them; its peak memory is unchanged, it is only not
returned until the process ends."""
import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

OPT_OUT_ENV = "FQ_PLUGIN_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_THRESHOLD = 1 << 30
_STATE = {"kept": None}


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (``FQ_PLUGIN_KEEP_FREED_MEMORY=0`` leaves it alone); return whether it
    is tuned. Other C libraries are left as they are."""
    if _STATE["kept"] is None:
        _STATE["kept"] = False
        if os.environ.get(OPT_OUT_ENV, "1") == "0":
            logger.info(f"{OPT_OUT_ENV}=0: malloc left as it is")
        elif platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL(None)
            _STATE["kept"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)
                                  and libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
            if _STATE["kept"]:
                logger.info("decoding keeps freed memory for reuse (glibc malloc thresholds 1 GiB; "
                            f"{OPT_OUT_ENV}=0 leaves them)")
    return _STATE["kept"]
