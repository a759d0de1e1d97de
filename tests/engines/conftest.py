"""A real local Ray cluster for the Ray engine's tests: `ray.init(num_cpus=2)`, started once per session (a new one:
address="local", so a cluster another process runs on this machine is never joined).

The failure-injection variable (curate/engines/ray.py, FAIL_ONCE_ENV) is given to every worker of the job through
the runtime environment; its marker file exists (injection off) until a test removes it.
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
    # CURATE_TEST_RAY_ADDRESS: run these tests on a cluster started by hand (`ray start --head --num-cpus=2`).
    address = os.environ.get("CURATE_TEST_RAY_ADDRESS")
    ray.init(address=address or "local", num_cpus=None if address else 2, include_dashboard=False if not address else None,
             logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {FAIL_ONCE_ENV: str(fail_marker)}})  # every worker of the job sees it
    yield ray
    ray.shutdown()
