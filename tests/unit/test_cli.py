"""The `voice` command as an administrator runs it: real process, real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def voice(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice", *args],
        env={**os.environ, "VOICE_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    out = voice("init-db", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "demo data loaded" in out.stdout
    return tmp_path


def test_import_reports_every_bad_row_and_imports_nothing(data_dir: Path) -> None:
    csv = data_dir / "contacts.csv"
    csv.write_text("account_number,phone\n10042,+13125550142\n10042,12ab\nNOPE,+13125550143\n")
    out = voice("import", "contacts", str(csv), data_dir=data_dir)
    assert out.returncode == 1
    assert "line 3: invalid phone '12ab'" in out.stderr
    assert "line 4: unknown account 'NOPE'" in out.stderr
    assert "nothing imported (2 error(s))" in out.stderr
    # The good row on line 2 was not imported either.
    fixed = data_dir / "fixed.csv"
    fixed.write_text("account_number,phone\n10042,+13125550142\n")
    out = voice("import", "contacts", str(fixed), data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert "imported 1 contacts row(s)" in out.stdout


def test_invalid_config_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip]\nprot = 5060\n")
    out = voice("--config", str(bad), "init-db", data_dir=tmp_path)
    assert out.returncode == 2
    assert "unknown config key sip.prot" in out.stderr
    out = voice("init-db", data_dir=tmp_path, VOICE_SIP_PORT="fifty")
    assert out.returncode == 2
    assert "sip.port" in out.stderr and "'fifty'" in out.stderr
