"""The `voice` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recordings import cli as recordings_cli
from voice import config as config_mod
from voice.asr import models_cli

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from accounts.logins import Passwords
    from accounts.models import Softphone
    from accounts.users import Users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice", description="collections-voice server")
    parser.add_argument("--config", help="config file (default: ./config.toml if present)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the supervisor, its call workers and the HTTP API")
    serve.add_argument("--workers", type=int, help="number of call workers (overrides config)")
    worker = sub.add_parser("worker", help="run one call worker (normally started by serve)")
    worker.add_argument("--name", default="w0")
    zygote = sub.add_parser("zygote", help=argparse.SUPPRESS)
    ctl = sub.add_parser("ctl", help="ask the running server: health, dial TO, hangup CALL_ID")
    ctl.add_argument("op", choices=["health", "dial", "hangup"])
    ctl.add_argument("arg", nargs="?", help="dial: phone number or softphone user; hangup: call id")
    imp = sub.add_parser("import", help="import an ERP export (CSV) in one transaction")
    imp.add_argument("kind", choices=["accounts", "contacts", "invoices", "payments"])
    imp.add_argument("file", type=Path)
    sub.add_parser("init-db", help="create the database schema (and demo data if configured)")
    demo = sub.add_parser("demo", help="add a large generated portfolio (try the pages at scale)")
    demo.add_argument("--accounts", type=int, required=True, help="how many accounts, 1-1000000")
    _add_softphones_parser(sub)
    _add_users_parser(sub)
    recordings_cli.add_parser(sub)
    models_cli.add_parser(sub)
    for p in (serve, worker, zygote, ctl, imp, sub.choices["init-db"], demo):
        p.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    path = args.sub_config or args.config
    if path is None and Path("config.toml").exists():
        path = "config.toml"
    try:
        cfg = config_mod.load(path)
        if getattr(args, "workers", None) is not None:
            from dataclasses import replace

            cfg = replace(cfg, workers=replace(cfg.workers, count=args.workers))
            cfg.workers.validate()
    except config_mod.ConfigError as exc:
        print(f"voice: configuration error: {exc}", file=sys.stderr)
        return 2

    if args.command == "worker":
        return _worker(cfg, args.name)
    if args.command == "zygote":
        from voice.zygote import run as run_zygote

        return run_zygote(cfg)
    if args.command == "ctl":
        return _ctl(cfg, args.op, args.arg)
    if args.command == "serve":
        return _serve(cfg, path)
    if args.command == "import":
        return _import(cfg, args.kind, args.file)
    if args.command == "softphones":
        return _softphones(cfg, args)
    if args.command == "users":
        return _users(cfg, args)
    if args.command == "recordings":
        return recordings_cli.run(cfg, args, _sessions(cfg))
    if args.command == "models":
        return models_cli.run(cfg, args)
    if args.command == "demo":
        return _demo(cfg, args.accounts)
    return _init_db(cfg)


def _serve(cfg: config_mod.Config, path: str | None) -> int:
    from voice.supervisor import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        supervisor = Supervisor(cfg, path)
    except config_mod.ConfigError as exc:
        print(f"voice: configuration error: {exc}", file=sys.stderr)
        return 2
    supervisor.prepare()
    print(
        f"voice: SIP on {cfg.sip.bind}:{cfg.sip.port}, HTTP on http://{cfg.http.host}:"
        f"{cfg.http.port}, data in {cfg.data_dir}",
        flush=True,
    )
    try:
        asyncio.run(supervisor.run())
    except RuntimeError as exc:  # e.g. Kamailio refused its config or a port is taken
        print(f"voice: could not start: {exc}", file=sys.stderr)
        return 1
    return 0


def _worker(cfg: config_mod.Config, name: str) -> int:
    """One worker by hand (debugging): as `serve` would run it, without the supervisor."""
    from accounts.db import create_schema, make_engine
    from voice.calls.worker import run
    from voice.fleet import worker_specs

    specs = {spec.name: spec for spec in worker_specs(cfg)}
    if name not in specs:
        print(f"voice: no worker {name!r} (known: {', '.join(specs)})", file=sys.stderr)
        return 2
    create_schema(make_engine(cfg.database_url, cfg.database.busy_timeout_ms))
    run(cfg, specs[name], load=True)
    return 0


def _ctl(cfg: config_mod.Config, op: str, arg: str | None) -> int:
    import json

    from voice import control
    from voice.fleet import run_dir

    args: dict[str, object] = {}
    if op == "dial":
        if not arg:
            print("voice: ctl dial needs a number or softphone user", file=sys.stderr)
            return 2
        args["to"] = arg
    elif op == "hangup":
        if not (arg and arg.isdigit()):
            print("voice: ctl hangup needs a call id", file=sys.stderr)
            return 2
        args["call_id"] = int(arg)
    try:
        reply = asyncio.run(control.request(run_dir(cfg) / "supervisor.sock", op, 15.0, **args))
    except control.ControlError as exc:
        print(f"voice: {exc}", file=sys.stderr)
        return 1
    reply.pop("ok", None)
    print(json.dumps(reply, indent=2))
    return 0


def _sessions(cfg: config_mod.Config) -> sessionmaker[Session]:
    from accounts.db import create_schema, make_engine, make_sessions

    engine = make_engine(cfg.database_url, cfg.database.busy_timeout_ms)
    create_schema(engine)
    return make_sessions(engine)


def _import(cfg: config_mod.Config, kind: str, file: Path) -> int:
    from accounts.importer import CsvImportError, import_csv

    try:
        count = import_csv(_sessions(cfg), kind, file, region=cfg.accounts.default_region)
    except CsvImportError as exc:
        for err in exc.errors:
            print(f"{file}: line {err.line}: {err.message}", file=sys.stderr)
        print(f"voice: nothing imported ({len(exc.errors)} error(s))", file=sys.stderr)
        return 1
    print(f"voice: imported {count} {kind} row(s) from {file}")
    return 0


def _init_db(cfg: config_mod.Config) -> int:
    from accounts.demo import load_demo_if_empty

    sessions = _sessions(cfg)
    if cfg.accounts.demo_data and load_demo_if_empty(sessions):
        print("voice: demo data loaded")
    print(f"voice: database ready at {cfg.database_url}")
    return 0


def _demo(cfg: config_mod.Config, accounts: int) -> int:
    from accounts.db import make_engine
    from accounts.portfolio import PortfolioError, fill

    if not 1 <= accounts <= 1_000_000:
        print("voice: --accounts must be from 1 to 1000000", file=sys.stderr)
        return 2
    _sessions(cfg)  # the schema
    try:
        notes = fill(make_engine(cfg.database_url, cfg.database.busy_timeout_ms), accounts)
    except PortfolioError as exc:
        print(f"voice: {exc}", file=sys.stderr)
        return 1
    print(f"voice: added {accounts:,} accounts with {notes:,} notes for 50 collectors")
    return 0


def _add_softphones_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    phones = sub.add_parser("softphones", help="collectors' SIP logins: add, list, remove, passwd")
    ops = phones.add_subparsers(dest="op", required=True)
    add = ops.add_parser("add", help="create a login; prints a generated password once")
    add.add_argument("name", help="SIP user name: 1-64 of a-z 0-9 . _ -")
    add.add_argument("--collector", help="name of the collector who uses it")
    passwd = ops.add_parser("passwd", help="set a new password (generated unless --password-stdin)")
    passwd.add_argument("name")
    for p in (add, passwd):
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    remove = ops.add_parser("remove", help="delete a login; its registrations end at once")
    remove.add_argument("name")
    listing = ops.add_parser("list", help="show the logins (never a password)")
    for p in (add, passwd, remove, listing):
        p.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)


def _softphones(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from voice.routing.softphones import SoftphoneError, Softphones, generate_password

    phones, realm = Softphones(_sessions(cfg)), cfg.kamailio.realm
    try:
        if args.op == "list":
            return _list_softphones(phones.list(), realm)
        if args.op == "remove":
            phones.remove(args.name)
            print(f"voice: softphone {args.name} removed")
        else:
            password = _password_from_stdin() if args.password_stdin else generate_password()
            if args.op == "add":
                phones.add(args.name, realm, password, args.collector)
                print(f"voice: softphone {args.name} added (realm {realm})")
            else:
                phones.set_password(args.name, realm, password)
                print(f"voice: softphone {args.name} has a new password")
            if not args.password_stdin:
                print(f"password: {password}  (shown once; only its digest is stored)")
    except SoftphoneError as exc:
        print(f"voice: {exc}", file=sys.stderr)
        return 1
    _apply_softphones(cfg)
    return 0


def _password_from_stdin() -> str:
    from voice.routing.softphones import SoftphoneError, check_password

    password = sys.stdin.readline().rstrip("\r\n")
    check_password(password)  # raises SoftphoneError
    if password != password.strip():
        raise SoftphoneError("password must not start or end with spaces")
    return password


def _list_softphones(phones: list[Softphone], realm: str) -> int:
    if not phones:
        print("voice: no softphones")
        return 0
    for phone in phones:
        collector = phone.collector.name if phone.collector else "-"
        stale = "" if phone.realm == realm else f"  (realm {phone.realm}: run passwd)"
        print(f"{phone.username:<24} {collector:<24} {phone.created_at:%Y-%m-%d %H:%M} UTC{stale}")
    return 0


def _apply_softphones(cfg: config_mod.Config) -> None:
    """A server that ran here keeps Kamailio's tables in its run folder: update them now."""
    from voice.routing.kamailio import KamailioError, apply_credentials, default_run_dir

    run_dir = default_run_dir(cfg)
    if not run_dir.is_dir():
        return
    try:
        apply_credentials(cfg, run_dir)
    except (OSError, KamailioError) as exc:
        print(f"voice: not applied to the running SIP front ({exc}); restart it", file=sys.stderr)
        return
    print(f"voice: credentials exported to {run_dir} (Kamailio reloads them, no restart)")


def _add_users_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="API users and their tokens: add, list, token, disable")
    ops = users.add_subparsers(dest="op", required=True)
    add = ops.add_parser("add", help="create a user; prints its API token once")
    add.add_argument("name", help="user name: 1-64 of a-z 0-9 . _ -")
    add.add_argument("--role", required=True, help="collector, supervisor, compliance or admin")
    add.add_argument("--collector", help="collector users: the collector's name")
    passwd = ops.add_parser("passwd", help="set the page login password; ends their sessions")
    passwd.add_argument("name")
    for p in (add, passwd):
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the page login password from stdin (passwd without it: generated)",
        )
    token = ops.add_parser("token", help="issue a new token; the old one stops working")
    disable = ops.add_parser("disable", help="refuse the user from now on (token revoked)")
    enable = ops.add_parser("enable", help="let a disabled user back in; prints a new token")
    for p in (token, disable, enable):
        p.add_argument("name")
    listing = ops.add_parser("list", help="show the users (never a token)")
    for p in (add, passwd, token, disable, enable, listing):
        p.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)


def _users(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from accounts.logins import Passwords, check_password
    from accounts.users import UserError, Users

    sessions = _sessions(cfg)
    users = Users(sessions)
    try:
        if args.op == "list":
            return _list_users(users)
        if args.op == "disable":
            users.disable(args.name)
            print(f"voice: user {args.name} disabled; its token and page sessions no longer work")
            return 0
        if args.op == "passwd":
            return _user_password(Passwords(sessions), args.name, args.password_stdin)
        if args.op == "add":
            password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
            if password is not None:
                check_password(password)  # before the user exists: nothing half-made
            user, token = users.add(args.name, args.role, args.collector)
            linked = f", collector {user.collector.name}" if user.collector else ""
            print(f"voice: user {user.name} added (role {user.role}{linked})")
            if password is not None:
                Passwords(sessions).set(user.name, password)
                print(f"voice: user {user.name} can log in to the pages")
        elif args.op == "token":
            token = users.rotate_token(args.name)
            print(f"voice: user {args.name} has a new token; the old one no longer works")
        else:
            token = users.enable(args.name)
            print(f"voice: user {args.name} enabled with a new token")
    except UserError as exc:
        print(f"voice: {exc}", file=sys.stderr)
        return 1
    print(f"token: {token}  (shown once; only its hash is stored)")
    return 0


def _user_password(passwords: Passwords, name: str, from_stdin: bool) -> int:
    import secrets

    password = sys.stdin.readline().rstrip("\r\n") if from_stdin else secrets.token_urlsafe(12)
    passwords.set(name, password)  # raises UserError
    print(f"voice: user {name} has a new page login password; their sessions ended")
    if not from_stdin:
        print(f"password: {password}  (shown once; only its argon2 hash is stored)")
    return 0


def _list_users(users: Users) -> int:
    found = users.list()
    if not found:
        print("voice: no users")
        return 0
    for user in found:
        collector = user.collector.name if user.collector else "-"
        state = "active" if user.active else "disabled"
        since = f"{user.created_at:%Y-%m-%d %H:%M} UTC"
        print(f"{user.name:<24} {user.role:<11} {collector:<24} {state:<8} since {since}")
    return 0
