"""A throwaway PostgreSQL cluster for tests: unix socket only, no durability, torn down after.

    cluster = start_postgres()        # in scratch_dir(): /dev/shm when it has room, else /tmp
    url = cluster.create_database()   # postgresql+psycopg://postgres@/t1?host=<socket dir>
    ...
    cluster.stop()

Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin, off PATH. initdb
refuses to run as root, so as root the cluster runs as the `postgres` system user.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
START_TIMEOUT = 30  # seconds pg_ctl waits for the server to accept connections
# On disk (ext4) CREATE DATABASE takes ~300 ms even with fsync off; on tmpfs ~15 ms. A cluster
# with a few dozen test databases needs a few hundred MB; Docker's default /dev/shm is 64 MB.
TMPFS = Path("/dev/shm")
TMPFS_MIN_FREE = 1 << 30  # bytes

# Written to postgresql.conf. Durability is worthless for a cluster deleted after the run; the
# connection limit fits a fleet test (~30 processes, each with a small pool) plus headroom.
SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    # Not UTC, so code that assumes the server's zone is UTC fails here and not in production.
    "timezone": "'America/New_York'",
}


PREFIX = "voice-pg-"
OWNER_FILE = "owner.pid"  # in base_dir: the process that started the cluster


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed (or cannot run as this user); the message says what to do."""


class PostgresStartError(RuntimeError):
    """initdb or the server failed; the message carries their output and the server log."""


def scratch_dir() -> Path:
    """A new private directory for a cluster: on tmpfs when it has room, else in $TMPDIR.

    Clusters left there by test runs killed before their teardown are stopped and removed.
    """
    parent = Path(tempfile.gettempdir())
    try:
        if os.access(TMPFS, os.W_OK) and shutil.disk_usage(TMPFS).free >= TMPFS_MIN_FREE:
            parent = TMPFS
    except OSError:
        pass
    _remove_orphans(parent)
    return Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: newest Debian version, pg_config, then PATH."""
    candidates: list[Path] = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: _version_key(p.parent.name),
        reverse=True,
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, "
        "pg_config --bindir or PATH; install them with `make test-system-deps` "
        "(Debian package postgresql)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


@dataclass
class PgCluster:
    """A running cluster; `url` is a database created at start, `create_database` makes more."""

    base_dir: Path
    bindir: Path
    socket_dir: Path
    data_dir: Path
    url: str
    _run_as: Sequence[str] = ()
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def dsn(self, database: str = "postgres") -> str:
        """libpq connection string (for psycopg directly), e.g. for CREATE DATABASE."""
        return f"host={self.socket_dir} user={SUPERUSER} dbname={database}"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = name or f"t{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, closing any connection a test left open to it."""
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(drop)

    def stop(self) -> None:
        """Stop at once (nothing here needs to survive) and delete the cluster's files."""
        _stop(self.bindir, self.base_dir, self._run_as)


def start_postgres(base_dir: Path | None = None, database: str = "voice") -> PgCluster:
    """Create and start a cluster under base_dir (default scratch_dir(); deleted by stop()).

    Its `url` points at a new empty database named `database`. When we are root, base_dir
    must be reachable by the `postgres` user, so not under pytest's private tmp_path.
    """
    bindir = find_bindir()
    run_as = _run_as_prefix()
    base_dir = base_dir or scratch_dir()
    base_dir.mkdir(parents=True, exist_ok=True)
    socket_dir, data_dir = base_dir / "sock", base_dir / "data"
    socket_dir.mkdir(exist_ok=True)
    (base_dir / OWNER_FILE).write_text(str(os.getpid()))
    cluster = PgCluster(base_dir, bindir, socket_dir, data_dir, "", tuple(run_as))
    try:
        if run_as:
            user = pwd.getpwnam(SUPERUSER)
            for path in (base_dir, socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            _check_reachable(base_dir, user)
        initdb = [str(bindir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "-A", "trust"]
        _run([*run_as, *initdb, "-E", "UTF8", "--locale=C", "--no-sync"], base_dir, "initdb")
        with open(data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/pg.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in SETTINGS.items())
            conf.write(f"unix_socket_directories = '{socket_dir}'\n")
        log = base_dir / "server.log"
        pg_ctl = [str(bindir / "pg_ctl"), "start", "-D", str(data_dir), "-l", str(log)]
        _run([*run_as, *pg_ctl, "-w", "-t", str(START_TIMEOUT)], base_dir, "pg_ctl start", log)
        cluster.url = cluster.create_database(database)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _stop(bindir: Path, base_dir: Path, run_as: Sequence[str]) -> None:
    if (base_dir / "data" / "postmaster.pid").exists():
        pg_ctl = [str(bindir / "pg_ctl"), "stop", "-D", str(base_dir / "data"), "-m", "immediate"]
        subprocess.run([*run_as, *pg_ctl, "-w"], cwd=base_dir, capture_output=True)
    shutil.rmtree(base_dir, ignore_errors=True)


def _remove_orphans(parent: Path) -> None:
    """Stop and delete clusters whose starting process is gone (killed before stop())."""
    for base_dir in parent.glob(f"{PREFIX}*"):
        try:
            owner = int((base_dir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # being set up right now, or not a cluster of ours
        try:
            os.kill(owner, 0)
            continue  # still running: its cluster is in use
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            _stop(find_bindir(), base_dir, _run_as_prefix())
        except PostgresUnavailable:
            shutil.rmtree(base_dir, ignore_errors=True)


def _run_as_prefix() -> list[str]:
    """Command prefix that drops root to the postgres user; empty when not root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root but there is no {SUPERUSER!r} system user for initdb "
            "(the Debian package postgresql creates it)"
        ) from None
    if shutil.which("runuser"):
        return ["runuser", "-u", SUPERUSER, "--"]
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={SUPERUSER}", f"--regid={SUPERUSER}", "--init-groups"]
    raise PostgresUnavailable("running as root and neither runuser nor setpriv is available")


def _check_reachable(base_dir: Path, user: pwd.struct_passwd) -> None:
    for parent in base_dir.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.stat().st_uid != user.pw_uid:
            raise PostgresUnavailable(
                f"{parent} is not searchable by the {SUPERUSER!r} user, so a cluster in "
                f"{base_dir} cannot start; use a directory from tempfile.mkdtemp()"
            )


def _run(cmd: list[str], cwd: Path, what: str, log: Path | None = None) -> None:
    # Output goes to a file, not a pipe: the server pg_ctl leaves running must not hold our pipe.
    out_path = cwd / f"{what.replace(' ', '-')}.out"
    with open(out_path, "wb") as out:
        code = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        text = out_path.read_text(errors="replace")
        if log is not None and log.exists():
            text += log.read_text(errors="replace")
        raise PostgresStartError(f"{what} failed (exit {code}):\n{text[-3000:]}")
