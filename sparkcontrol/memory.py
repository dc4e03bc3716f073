"""How `serve` asks the C allocator to hold less memory it no longer uses (glibc; elsewhere nothing is done).

glibc's malloc gives each thread that allocates at the same moment as another an arena of its own, up to eight
per core, and freed memory stays in the arena it came from. `serve` runs ~25 threads (the HTTP pool, the task
workers, SSH transports, a swap's short-lived helpers): SQLite's caches, TLS and SSH buffers and every Python
object over 512 bytes were spread over up to 16 arenas, each keeping its own free memory. Two arenas hold the
same work; Python's own small objects are not affected (they live in Python's arenas).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
SERVE_ARENAS = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def malloc_arenas_limit(arenas: int = SERVE_ARENAS) -> bool:
    """At most `arenas` malloc arenas for the threads started from now on; False where malloc is not glibc's."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


# A trim walks every arena's free memory: at most one this often, however many threads ask.
TRIM_MIN_INTERVAL_SECONDS = 1.0
_trim_lock = threading.Lock()
_trimmed_at = 0.0


def malloc_trim_soon() -> bool:
    """Hand the allocator's free pages back to the system, unless that was done within the last second (or malloc
    is not glibc's). After a burst, memory freed by closed connections and finished requests is spread over
    pages that hold some live blocks too; glibc gives back only the top of each arena by itself."""
    global _trimmed_at
    libc = _libc()
    if libc is None:
        return False
    with _trim_lock:
        now = time.monotonic()
        if now - _trimmed_at < TRIM_MIN_INTERVAL_SECONDS:
            return False
        _trimmed_at = now
    libc.malloc_trim(0)
    return True
