"""`voice recordings verify | purge [--dry-run] | hold ID --reason TEXT | release ID`.

Each run leaves an audit row (actor `cli`), like any other access to recordings.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from voice.config import Config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rec = sub.add_parser(
        "recordings", help="recordings: verify integrity, purge past retention, legal hold"
    )
    ops = rec.add_subparsers(dest="op", required=True)
    verify = ops.add_parser(
        "verify", help="recompute each finalised recording's SHA-256; exit 1 on any failure"
    )
    verify.add_argument("--verbose", action="store_true", help="also list the recordings that pass")
    purge = ops.add_parser(
        "purge", help="delete the audio of recordings past retention and not on legal hold"
    )
    purge.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    hold = ops.add_parser("hold", help="place a legal hold (the recording is never deleted)")
    hold.add_argument("id", type=int)
    hold.add_argument("--reason", required=True, help="e.g. the matter or case reference")
    release = ops.add_parser("release", help="lift a legal hold")
    release.add_argument("id", type=int)
    release.add_argument("--reason", help="why the hold ends")
    for p in (verify, purge, hold, release):
        p.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)


def run(cfg: Config, args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    if args.op == "verify":
        return _verify(cfg, sessions, args.verbose)
    if args.op == "purge":
        return _purge(cfg, sessions, args.dry_run)
    return _hold(cfg, sessions, args.id, args.op == "hold", args.reason)


def _verify(cfg: Config, sessions: sessionmaker[Session], verbose: bool) -> int:
    from accounts import audit
    from recordings.verify import verify_all

    root = cfg.recordings_dir
    counts: Counter[str] = Counter()
    failed = []
    for result in verify_all(sessions, root):
        counts[result.result] += 1
        if not result.ok:
            failed.append(result.recording_id)
            print(f"recording {result.recording_id}: {result.result}: {result.detail}")
        elif verbose:
            print(f"recording {result.recording_id}: ok {result.actual}")
    total = sum(counts.values())
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"
    detail = {"checked": total, "results": dict(counts), "failed": failed[:1000]}
    audit.record(sessions, None, None, "recordings.verify", "recording", None, detail)
    print(f"voice: {total} recording(s) checked in {root}: {summary}")
    return 1 if failed else 0


def _purge(cfg: Config, sessions: sessionmaker[Session], dry_run: bool) -> int:
    from accounts import audit
    from accounts.models import utcnow
    from recordings.retention import Retention

    now = utcnow()
    result = Retention.from_config(cfg, sessions).purge(now, dry_run=dry_run)
    for rid, error in result.errors:
        print(f"recording {rid}: not deleted: {error}", file=sys.stderr)
    if not dry_run:
        detail = {
            "deleted": result.deleted,
            "already_missing": result.missing,
            "errors": [rid for rid, _ in result.errors],
            "retention_days": cfg.recordings.retention_days,
        }
        audit.record(sessions, None, None, "recordings.purge", "recording", None, detail)
    verb = "would delete" if dry_run else "deleted"
    ids = " ".join(str(rid) for rid in result.deleted)
    print(
        f"voice: {verb} {len(result.deleted)} recording(s) past retention"
        + (f": {ids}" if ids else "")
    )
    return 1 if result.errors else 0


def _hold(
    cfg: Config, sessions: sessionmaker[Session], rid: int, held: bool, reason: str | None
) -> int:
    from accounts import audit
    from recordings.retention import RecordingDeleted, Retention
    from recordings.verify import RecordingNotFound

    def log(session: Session, changed: bool) -> None:
        detail: dict[str, object] = {"changed": changed}
        if reason:
            detail["reason"] = reason
        action = "recording.hold" if held else "recording.release"
        audit.record(session, None, None, action, "recording", rid, detail)

    try:
        changed = Retention.from_config(cfg, sessions).set_hold(rid, held, also=log)
    except (RecordingNotFound, RecordingDeleted) as exc:
        print(f"voice: {exc}", file=sys.stderr)
        return 1
    state = "on legal hold" if held else "no longer on legal hold"
    print(f"voice: recording {rid} {'is now' if changed else 'was already'} {state}")
    return 0
