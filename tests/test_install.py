"""The base install is the pipeline SDK alone: httpx and the standard library, nothing of the
operator's side (psycopg, yoyo, jinja2, WeasyPrint), which comes with the `operator` extra.

Installs the package from this checkout, without extras, into a fresh virtualenv that does not
see the system's site-packages, and imports the SDK there.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
OPERATOR_MODULES = ("psycopg", "yoyo", "sqlparse", "jinja2", "weasyprint")
PYPI = "https://pypi.org/simple/"


def _pypi_reachable() -> bool:
    host = urlsplit(PYPI).hostname
    try:
        with socket.create_connection((host, 443), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with `pip install <checkout>` (no extras), built from a copy of the package
    so the checkout's own build directories are left alone."""
    root = tmp_path_factory.mktemp("base-install")
    source = root / "src"
    source.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", source)
    shutil.copytree(REPO_ROOT / "loader", source / "loader",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600)
    # pip uses the machine's configured indexes (a local mirror counts); only when none of them
    # has httpx and the public index is unreachable is there nothing to test here.
    if result.returncode != 0 and "No matching distribution" in result.stderr \
            and not _pypi_reachable():
        pytest.skip(f"no configured index has httpx and {PYPI} is not reachable")
    assert result.returncode == 0, f"pip install of the base package failed:\n{result.stderr}"
    return venv


def test_the_base_install_imports_the_sdk_without_the_operator_modules(base_venv: Path) -> None:
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        import stepledger.sdk
        from stepledger.sdk import Tracker
        # The API is away (port 9): events are spooled, close() gives up and keeps them.
        tracker = Tracker("http://127.0.0.1:9", "t", client_id="st-mary", pipeline="botimage",
                          spool_dir=sys.argv[1])
        with tracker.job("study-1") as job, job.step("dicom-intake", units=2):
            pass
        tracker.close(timeout_s=0.5)
        found = [m for m in {OPERATOR_MODULES!r} if importlib.util.find_spec(m) is not None]
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {OPERATOR_MODULES!r})
        print(json.dumps({{"sdk": stepledger.sdk.__file__, "emitted": tracker.stats.emitted,
                          "found": found, "loaded": loaded}}))
        """)
    result = subprocess.run([str(base_venv / "bin" / "python"), "-c", script,
                             str(base_venv.parent / "spool")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sdk"].startswith(str(base_venv)), "the SDK must come from the fresh venv"
    assert report["emitted"] > 0
    assert report["found"] == [], f"the base install pulled in operator modules: {report}"
    assert report["loaded"] == []


def test_the_cli_without_the_operator_extra_says_so_in_one_line(base_venv: Path) -> None:
    result = subprocess.run([str(base_venv / "bin" / "stepledger"), "status"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "operator extra" in lines[0] and "stepledger[operator]" in lines[0]
