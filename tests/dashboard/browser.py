"""A real headless browser for the dashboard's tests: Debian's chromium driven by playwright
(never a browser playwright downloads), and the `omniopd dashboard` process it looks at.

Screenshots go to the test's tmp dir and are copied to runs/test-artifacts/ (gitignored),
so a person can look at what the test saw after any run, CI's included.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("OMNIOPD_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "runs" / "test-artifacts"
# As root, on a machine without a network: no sandbox (root), no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium with a fresh profile; fails (CI) or skips when it is not installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable("playwright (pip install -e .[dev])", exc)
    if not CHROMIUM.is_file():
        unavailable(f"Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)", "no such file")
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="omniopd-chromium-") as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000}, bypass_csp=True,  # the page forbids eval; waits use it
        )
        try:
            yield context
        finally:
            context.close()


def keep_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Screenshot the whole page into the test's tmp dir and copy it to runs/test-artifacts/."""
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    return shot


def wait_loaded(page, refreshes: int = 1, timeout_ms: float = 30_000) -> None:
    """Until the page has drawn its data `refreshes` times."""
    page.wait_for_function(
        f"Number(document.body.getAttribute('data-refreshes') || 0) >= {refreshes}", timeout=timeout_ms)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def dashboard_process(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`omniopd dashboard ARGS --port P` as a real process; yields its address, stops it after."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "omniopd", "dashboard", *args, "--port", str(port)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        line = process.stdout.readline()  # the address, printed once it listens
        match = re.search(r"http://\S+", line)
        if match is None:
            rest = process.communicate(timeout=30)[0] if process.poll() is not None else ""
            raise AssertionError(f"the dashboard did not start: {line}{rest}")
        yield match.group(0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        process.stdout.close()


def check_live_dashboard(workdir: Path, run_name: str, tmp_path: Path, timeout_s: float = 300) -> None:
    """The dashboard a running `omniopd demo` serves (its address is in <workdir>/logs/
    dashboard.log) loads in Chromium and shows the run live, refreshing by itself.

    Call it early in the demo: once the run exists (before the evaluation of the base model)
    it stays live for a minute or more, whereas the smoke run's 8 steps take seconds."""
    import json
    import time
    import urllib.request

    log = workdir / "logs" / "dashboard.log"
    deadline = time.monotonic() + timeout_s
    address, status = None, None
    while time.monotonic() < deadline and status not in ("created", "running"):
        match = re.search(r"http://\S+", log.read_text() if log.is_file() else "")
        if match:
            address = match.group(0)
            with urllib.request.urlopen(f"{address}api/runs", timeout=10) as response:
                runs = [r for s in json.load(response)["sources"] for r in s["runs"]]
            status = next((r["status"] for r in runs if r["name"] == run_name), None)
        time.sleep(0.5)
    assert address, f"the demo's dashboard printed no address in {log}"
    assert status in ("created", "running"), f"run {run_name} never showed up live on {address} (status {status})"
    with chromium() as browser:
        page = browser.new_page()
        page.goto(address)
        wait_loaded(page)
        row = page.locator(f"#runs-table tr[data-run='{run_name}']")
        shown = row.locator("[data-field=status]").inner_text()
        assert shown in ("created", "running"), shown
        assert "(live)" in page.locator("#run-line").inner_text()
        wait_loaded(page, refreshes=2)  # a live run refreshes by itself
        keep_screenshot(page, tmp_path, "dashboard-live-demo")
