"""`voice models fetch NAME [...]` and `voice models list`.

Exit codes: 0 installed / listed; 1 download, verification, unpacking or installation failed
(the message names the cause; nothing is installed); 2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voice.asr.fetch import Installed
    from voice.config import Config

FETCH_HELP = """\
Downloads <base-url>/<NAME>.zip, verifies it, unpacks it safely and installs it
as <models dir>/<NAME>, then prints the asr.model line that uses it.

Checksum: the archive is checked against the first of
  --sha256 HEX; <base-url>/<NAME>.zip.sha256; <NAME>.zip in <base-url>/SHA256SUMS;
  the MD5 and size listed in <base-url>/model-list.json (all the official Vosk
  site publishes).
A checksum from the download server itself catches damage in transit, not a
tampered server: for that, pin --sha256 from a source you trust (every install
prints the archive's SHA-256, so the next machine can pin it). With no checksum
at all the fetch is refused unless --insecure-no-checksum.

Exit status: 0 installed; 1 download, checksum, unpacking or install failed
(nothing installed); 2 bad arguments or configuration.

examples:
  voice models fetch vosk-model-small-en-us-0.15
  voice models fetch vosk-model-en-us-0.22 --sha256 <64 hex digits> --force
  voice models fetch my-model --base-url file:///mnt/mirror/vosk --dest /srv/models
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="Vosk speech models: fetch NAME, list")
    ops = models.add_subparsers(dest="op", required=True)
    fetch = ops.add_parser(
        "fetch",
        help="download, verify and install a Vosk model by name",
        description=FETCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument(
        "name", metavar="NAME", help="model name as published, e.g. vosk-model-small-en-us-0.15"
    )
    fetch.add_argument(
        "--base-url", metavar="URL", help="where models are published (default: asr.base_url)"
    )
    fetch.add_argument(
        "--sha256", metavar="HEX", help="expected SHA-256 of the .zip (64 hex digits)"
    )
    fetch.add_argument(
        "--insecure-no-checksum",
        action="store_true",
        help="install even when no checksum is given or published (a published one is still "
        "checked)",
    )
    fetch.add_argument("--force", action="store_true", help="replace an installed model of NAME")
    listing = ops.add_parser("list", help="show the models installed in the models folder")
    for p in (fetch, listing):
        p.add_argument(
            "--dest",
            metavar="DIR",
            type=Path,
            help="models folder; a model goes to DIR/NAME (default: asr.models_dir)",
        )
        p.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)


def run(cfg: Config, args: argparse.Namespace) -> int:
    folder = args.dest.expanduser().resolve() if args.dest else cfg.models_dir
    if args.op == "list":
        return _list(cfg, folder)
    return _fetch(cfg, args, folder)


def _fetch(cfg: Config, args: argparse.Namespace, folder: Path) -> int:
    from voice.asr import fetch
    from voice.config import ConfigError

    asr = cfg.asr
    try:
        fetch.check_name(args.name)
        sha256 = fetch.check_sha256(args.sha256) if args.sha256 is not None else None
        if sha256 and args.insecure_no_checksum:
            raise ValueError("--sha256 and --insecure-no-checksum contradict each other")
        if args.base_url is not None:
            asr = replace(asr, base_url=args.base_url)
            asr.validate()
    except (ValueError, ConfigError) as exc:
        message = str(exc).replace("asr.base_url", "--base-url")
        print(f"voice: models fetch: {message}", file=sys.stderr)
        return 2
    settings = fetch.Settings(
        base_url=asr.base_url,
        models_dir=folder,
        timeout=asr.download_timeout,
        max_archive_bytes=asr.max_archive_mb * fetch.MB,
        limits=fetch.Limits(asr.max_files, asr.max_unpacked_mb * fetch.MB),
    )
    try:
        installed = fetch.fetch_model(
            args.name,
            settings,
            sha256=sha256,
            allow_unverified=args.insecure_no_checksum,
            force=args.force,
        )
    except fetch.FetchError as exc:
        print(f"voice: models fetch {args.name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nvoice: models fetch {args.name}: interrupted; nothing installed", file=sys.stderr)
        return 130
    _report(installed)
    return 0


def _report(installed: Installed) -> None:
    verb = "replaced" if installed.replaced else "installed"
    print(f"voice: {verb} {installed.name} in {installed.path}")
    checksum = installed.checksum
    if checksum is None:
        how = "NOT verified (--insecure-no-checksum)"
    else:
        how = f"verified: {checksum.algorithm} from {checksum.source}"
    print(f"voice: {installed.size} bytes, sha256 {installed.sha256} ({how})")
    if checksum is not None and checksum.source.startswith("http://"):
        print(
            "voice: note: that checksum came over plain http; pin --sha256 from a trusted source",
            file=sys.stderr,
        )
    path = json.dumps(str(installed.path))
    print("voice: to use it, set this and restart the server:")
    print(f"    asr.model = {path}")
    print(f"  (in config.toml under [asr]: model = {path}; or VOICE_ASR_MODEL={installed.path})")


def _list(cfg: Config, folder: Path) -> int:
    from voice.asr.fetch import looks_like_model, read_provenance

    configured = Path(cfg.asr.model).expanduser().resolve() if cfg.asr.model else None
    models = sorted(p for p in _entries(folder) if p.is_dir())
    if not models:
        print(f"voice: no models installed in {folder}")
    for model in models:
        size = f"{_disk_bytes(model) / (1 << 20):8.1f} MB"
        if not looks_like_model(model):
            print(f"{model.name:<40} {size}  not a Vosk model")
            continue
        origin = read_provenance(model)
        sha = f"sha256 {origin['sha256'][:16]}…" if origin.get("sha256") else "(installed by hand)"
        used = "  <- asr.model" if configured == model.resolve() else ""
        print(f"{model.name:<40} {size}  {sha}{used}")
    if configured is not None and configured.parent != folder:
        print(f"voice: asr.model = {configured} (outside {folder})")
    return 0


def _entries(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:
        return []


def _disk_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
