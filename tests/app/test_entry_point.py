"""`python app.py` (README's first command) serves the app on the given loopback port until it is stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.app.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_python_app_py_serves_the_app(app_weights_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "SEGCORE_WEIGHTS_DIR": str(app_weights_dir), "SEGCORE_RUNS_DIR": str(tmp_path / "runs"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        page = None
        while time.time() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, process.stdout.read()
        assert page is not None and "squares-a" in page  # the installed models are in the page's configuration
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_app_py_help_lists_its_flags():
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=False,
                            timeout=120)
    assert result.returncode == 0
    assert "--host" in result.stdout and "--port" in result.stdout and "--share" in result.stdout
