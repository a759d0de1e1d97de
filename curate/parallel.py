"""A hook for engines to run a stage's independent per-chunk work elsewhere (tasks on a cluster).

Library code calls `map_tasks(fn, calls)`: `fn(*args)` for each `args` in `calls`, results in call order. Without
an engine's mapper that is a plain loop in this process. Within `spread_tasks(mapper)` (the Ray engine sets one
while a global stage runs on the driver) the calls go to `mapper`, which must yield the same results in the same
order: `fn` is a module-level function of pure inputs (NumPy arrays, lists of str), so where it runs can't change
what it returns. Used by MinHash signatures (curate.dedup.minhash.band_hashes); the embedder has its own pool hook
(curate.embed.spread_over), because its workers keep a loaded model between calls.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

TaskMapper = Callable[[Callable[..., Any], Iterable[tuple[Any, ...]]], Iterator[Any]]
_MAPPER: contextvars.ContextVar[TaskMapper | None] = contextvars.ContextVar("curate_task_mapper", default=None)


@contextlib.contextmanager
def spread_tasks(mapper: TaskMapper) -> Iterator[None]:
    """Within the block, `map_tasks` hands its calls to `mapper`."""
    token = _MAPPER.set(mapper)
    try:
        yield
    finally:
        _MAPPER.reset(token)


def map_tasks(fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
    """`fn(*args)` for each `args` of `calls`, in order: here, or through the engine's mapper. `calls` is read
    lazily (a mapper keeps only a bounded number in flight), so a caller may build each call's inputs on demand."""
    mapper = _MAPPER.get()
    if mapper is not None:
        return mapper(fn, calls)
    return (fn(*args) for args in calls)
