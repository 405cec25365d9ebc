"""The tutorials run end to end (they are documentation that must not rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IN_A_WORKER

TUTORIALS = sorted((Path(__file__).parents[1] / "tutorials").glob("*.py"))


@pytest.mark.parametrize("script", TUTORIALS, ids=[t.stem for t in TUTORIALS])
def test_tutorial_runs(script):
    # beside other xdist workers, one thread each (as conftest does in-process)
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if IN_A_WORKER else None
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "top audio heads" in result.stdout or "hook points" in result.stdout
