"""Real headless Chromium for the page tests: Debian's chromium and chromedriver driven by
Selenium, a fresh profile each time, nothing fetched from the network; plus the `voice`
command line against a test server, and screenshots under tests/output/screens/ (gitignored).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, Server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENS = REPO / "tests" / "output" / "screens"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
    "--autoplay-policy=no-user-gesture-required",
)


def require_chromium() -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium and chromedriver not installed (make test-system-deps)")


@contextlib.contextmanager
def open_chromium() -> Iterator[Any]:
    """A Selenium driver on a new headless Chromium with its own throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> Path:
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def voice_cli(
    server: Server, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`voice ARGS` on the server's data folder and database."""
    env = {
        **os.environ,
        "VOICE_DATA_DIR": str(server.data_dir),
        "VOICE_DATABASE_URL": server.db_url,
    }
    cmd = [sys.executable, "-m", "voice", "--config", str(REPO / "config.toml"), *args]
    return subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=60)


def add_page_user(
    server: Server, name: str, role: str, password: str, collector: str | None = None
) -> None:
    extra = ["--collector", collector] if collector else []
    args = ("users", "add", name, "--role", role, *extra, "--password-stdin")
    added = voice_cli(server, *args, stdin=password + "\n")
    assert added.returncode == 0, added.stderr
