"""The ``boneage users ...`` and ``boneage log verify`` commands (registered by :mod:`boneage_core.cli`).

    boneage users add NAME --role reader|admin [--password-stdin]   # the password is asked twice otherwise
    boneage users list
    boneage users passwd NAME [--password-stdin]
    boneage users role NAME reader|admin
    boneage users disable NAME | enable NAME                         # names are never removed nor reused
    boneage log verify [--db PATH|URL] [--anchor PATH]               # exit 1 on any problem
    boneage log migrate [--db PATH|URL]                              # upgrade the schema, print the revision

Every command takes ``--db``: a SQLite file or a ``postgresql://user:password@host:port/db`` URL
(default: ``$BONEAGE_REVIEW_DB`` or ``data/review.sqlite``). Changes are logged with the operating-system
user who made them (``cli:<user>``); passwords (the accounts' and the URL's) are never printed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .target import db_arg, log_target


def _db(args: argparse.Namespace) -> Path | str:
    from ..settings import get_settings

    return args.db if args.db else get_settings().review_db


def _shown(args: argparse.Namespace) -> str:
    """The log for messages (a URL without its password)."""
    return log_target(_db(args)).redacted


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise SystemExit("boneage users: the two passwords differ; nothing changed")
    return first


def _users(args: argparse.Namespace) -> int:
    from .accounts import Accounts
    from .log import ReviewLog

    if args.action != "add" and not log_target(_db(args)).exists():
        raise FileNotFoundError(f"no review log at {_shown(args)} (`boneage users add` creates it)")
    accounts = Accounts(ReviewLog(_db(args)))
    actor = _actor()
    if args.action == "list":
        rows = accounts.all()
        if not rows:
            print(f"no accounts in {_shown(args)}: `boneage users add NAME --role admin` creates the first")
        for a in rows:
            print(
                f"{a.name:<24} {a.role:<7} {'active' if a.active else 'disabled':<9} since {a.created_at:%Y-%m-%d}"
            )
        return 0
    if not args.name:
        raise SystemExit(f"boneage users {args.action}: give the account name")
    if args.action == "add":
        acc = accounts.add(args.name, _password(args), role=args.role, actor=actor)
        print(f"account {acc.name} ({acc.role}) created in {_shown(args)}")
    elif args.action == "passwd":
        acc = accounts.set_password(args.name, _password(args), actor=actor)
        print(f"password of {acc.name} changed")
    elif args.action == "role":
        if args.value not in ("reader", "admin"):
            raise SystemExit("boneage users role NAME reader|admin")
        acc = accounts.set_role(args.name, args.value, actor=actor)
        print(f"{acc.name} is now {acc.role}")
    elif args.action == "disable":
        print(f"account {accounts.disable(args.name, actor=actor).name} disabled")
    elif args.action == "enable":
        print(f"account {accounts.enable(args.name, actor=actor).name} enabled")
    return 0


def _log(args: argparse.Namespace) -> int:
    if args.action == "migrate":
        from .log import ReviewLog
        from .migrate import current_revision

        log = ReviewLog(_db(args))  # opening it upgrades it (and checks its triggers)
        try:
            with log.engine.connect() as conn:
                revision = current_revision(conn)
        finally:
            log.close()
        print(f"review log {log.target}: at revision {revision}")
        return 0
    from .verify import verify_log

    report = verify_log(_db(args), anchor=args.anchor)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``users`` and ``log`` to the ``boneage`` parser's subcommands."""
    db_help = "review log: a file or a postgresql:// URL (default: $BONEAGE_REVIEW_DB or data/review.sqlite)"
    u = sub.add_parser("users", help="reader accounts of the app: add, list, passwd, role, disable, enable")
    u.add_argument("action", choices=["add", "list", "passwd", "role", "disable", "enable"])
    u.add_argument("name", nargs="?", help="account name (a-z, 0-9, . _ -)")
    u.add_argument("value", nargs="?", help="for `role`: reader or admin")
    u.add_argument(
        "--role", choices=["reader", "admin"], default="reader", help="for `add` (default: reader)"
    )
    u.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    u.add_argument("--db", type=db_arg, help=db_help)
    u.set_defaults(func=_users)

    lg = sub.add_parser(
        "log",
        help="check the review log: hash chain, anchor, triggers (exit 1 on a problem); or migrate its schema",
    )
    lg.add_argument("action", choices=["verify", "migrate"])
    lg.add_argument("--db", type=db_arg, help=db_help)
    lg.add_argument(
        "--anchor", type=Path, help="the chain's anchor file (default: $BONEAGE_REVIEW_ANCHOR or <db>.anchor)"
    )
    lg.set_defaults(func=_log)
