"""Progress reporting for the long operations: a callback, called per chunk, never per row.

``Progress`` is ``(done, total)``; each operation names its unit (bytes or rows) and calls it
with values that never go down, ending with ``(total, total)``.  The library never prints:
the command line turns the calls into a bar or a line every few seconds (``cli/progress.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

Progress = Callable[[int, int], None]  #: (done, total), in the operation's unit


def counted_chunks(chunks: Iterable[bytes], progress: Progress | None, base: int, total: int) -> Iterator[bytes]:
    """``chunks`` unchanged, calling ``progress(base + bytes so far, total)`` after each one
    (capped at ``total``); ``chunks`` itself when ``progress`` is None."""
    if progress is None:
        yield from chunks
        return
    done = base
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        progress(min(done, total), total)
