"""The review server freezes its heap once the vector cache is warm (boot.freeze_heap_after), so later full
collections skip the objects alive at start instead of stalling every request for 300+ ms at 100k records."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from curate.review import boot

CODE = textwrap.dedent("""
    import gc, threading, time
    from curate.review.boot import freeze_heap_after
    alive = [[i] for i in range(20_000)]  # tracked objects alive at start
    warm = threading.Thread(target=time.sleep, args=(0.2,))
    warm.start()
    freeze_heap_after(warm)
    assert not warm.is_alive()  # it waited for the warm-up
    assert gc.get_freeze_count() >= len(alive), gc.get_freeze_count()
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(x) in tracked for x in alive)  # frozen: no collection walks them
    later = [[i] for i in range(10)]
    tracked = {id(o) for o in gc.get_objects()}
    assert all(id(x) in tracked for x in later)  # allocated later: collected as usual
    print("ok")
""")


def test_heap_frozen_after_the_warm_up():
    assert callable(boot.freeze_heap_after)
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
