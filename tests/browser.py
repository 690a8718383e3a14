"""Render an HTML file in headless Chromium (the Debian package) and report what the page shows.

Without a `chromium` binary the browser tests skip with the reason, except where SPML_REQUIRE_BROWSER=1
(set by .ci/run, which installs the package): there a missing browser fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Marks each image after the load event: loaded (a decoded picture with a width) or broken.
PROBE = """<script>window.addEventListener("load", () => {
  for (const img of document.images)
    img.setAttribute("data-probe", img.complete && img.naturalWidth > 0 ? "loaded" : "broken");
  document.body.setAttribute("data-probed", "yes");
});</script>"""


def chromium() -> str:
    """The browser binary; skips (or fails under SPML_REQUIRE_BROWSER=1) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "headless Chromium not installed (Debian: apt-get install chromium); the report is not rendered"
    if os.environ.get("SPML_REQUIRE_BROWSER") == "1":
        pytest.fail(message + ", and SPML_REQUIRE_BROWSER=1 requires it")
    pytest.skip(message)


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    """Chromium with the test flags and a fresh profile folder."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
        )


def rendered_dom(html_file: Path, workdir: Path) -> str:
    """The DOM Chromium built from `html_file` after its load event, each <img> marked data-probe=loaded|broken.
    The file is copied beside itself with the probe script appended (relative links keep working)."""
    probe = html_file.with_name(f".probe-{html_file.name}")
    probe.write_text(html_file.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        proc = run_chromium("--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri())
    finally:
        probe.unlink()
    assert 'data-probed="yes"' in proc.stdout, f"Chromium did not finish loading {html_file}: {proc.stderr[-2000:]}"
    return proc.stdout


def image_states(dom: str) -> list[str]:
    return re.findall(r'data-probe="(\w+)"', dom)


def screenshot(html_file: Path, png: Path, width: int = 1200, height: int = 1500) -> Path:
    proc = run_chromium(
        "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={png}", html_file.resolve().as_uri()
    )
    assert png.exists(), proc.stderr[-2000:]
    return png
