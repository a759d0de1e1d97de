"""A real local Ray cluster for the Ray engine's tests: `ray.init(num_cpus=2)`, started once per session (a new one:
address="local", so a cluster another process runs on this machine is never joined).

The failure-injection variable (curate/engines/ray.py, FAIL_ONCE_ENV) is set before the cluster starts, so every
worker inherits it; its marker file exists (injection off) until a test removes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fail_marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-fail") / "failed-once"


@pytest.fixture(scope="session")
def ray_cluster(fail_marker):
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    from curate.engines.ray import FAIL_ONCE_ENV

    fail_marker.write_text("off")
    os.environ[FAIL_ONCE_ENV] = str(fail_marker)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop(FAIL_ONCE_ENV, None)
