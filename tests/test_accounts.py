"""Reader accounts on a real review log: password hashing, the ``boneage users`` command, sign-in and its
throttle, and the accounts' history in the log's hash chain."""

from __future__ import annotations

import io
import sqlite3
import sys
from pathlib import Path

import pytest

from boneage_core.cli import main
from boneage_core.review.accounts import AccountError, Accounts, AuthError, LoginThrottle
from boneage_core.review.log import ReviewLog
from boneage_core.review.passwords import PasswordError, hash_password, verify_password
from boneage_core.review.verify import verify_log

PASSWORD = "granite-kettle-42"


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "review.sqlite"


def test_password_hashes_are_salted_scrypt_and_verify_only_the_right_password():
    a, b = hash_password(PASSWORD), hash_password(PASSWORD)
    assert a != b and a.startswith("scrypt$16384$8$1$")  # a random salt per hash
    assert PASSWORD not in a
    assert verify_password(PASSWORD, a) and verify_password(PASSWORD, b)
    assert not verify_password(PASSWORD + "x", a) and not verify_password("", a)
    # a tampered hash fails closed, and cannot ask for unbounded work
    for bad in (
        "",
        "md5$x",
        a.replace("scrypt$16384", "scrypt$1048577"),
        a.replace("scrypt$16384", "scrypt$2097152"),
        a[:-2],
        None,
    ):
        assert not verify_password(PASSWORD, bad)
    for weak in ("short", " " * 12, "aaaaaaaaaaaa", "x" * 1025):
        with pytest.raises(PasswordError):
            hash_password(weak)


def _users(
    db: Path, *args: str, stdin: str | None = None, monkeypatch=None, capsys=None
) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    rc = main(["users", *args, "--db", str(db)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_users_command_adds_lists_changes_and_disables_accounts(db, monkeypatch, capsys):
    run = lambda *a, stdin=None: _users(db, *a, stdin=stdin, monkeypatch=monkeypatch, capsys=capsys)  # noqa: E731
    rc, _, err = run("list")
    assert rc == 2 and "no review log" in err and not db.exists()  # a mistyped --db creates nothing
    Accounts(ReviewLog(db))
    rc, out, _ = run("list")
    assert rc == 0 and "no accounts" in out
    rc, out, _ = run("add", "Dr_Admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert rc == 0 and "account dr_admin (admin) created" in out
    rc, out, _ = run("add", "dr_a", "--password-stdin", stdin="another-pass-77\n")
    assert rc == 0 and "(reader)" in out
    rc, _, err = run("add", "dr_a", "--password-stdin", stdin="third-password-1\n")
    assert rc == 2 and "already" in err
    rc, _, err = run("add", "dr_b", "--password-stdin", stdin="short\n")
    assert rc == 2 and "at least 10 characters" in err
    rc, _, err = run("add", "../etc", "--password-stdin", stdin=PASSWORD + "\n")
    assert rc == 2 and "account name" in err
    rc, out, _ = run("list")
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["dr_a", "reader", "active"],
        ["dr_admin", "admin", "active"],
    ]
    assert PASSWORD not in out

    accounts = Accounts(ReviewLog(db))
    assert accounts.authenticate("dr_a", "another-pass-77").role == "reader"
    rc, out, _ = run("passwd", "dr_a", "--password-stdin", stdin="changed-pass-99\n")
    assert rc == 0
    with pytest.raises(AuthError):
        accounts.authenticate("dr_a", "another-pass-77")
    assert accounts.authenticate("DR_A ", "changed-pass-99").name == "dr_a"
    assert run("role", "dr_a", "admin")[0] == 0 and accounts.get("dr_a").is_admin
    assert run("disable", "dr_a")[0] == 0
    with pytest.raises(AuthError, match="disabled"):
        accounts.authenticate("dr_a", "changed-pass-99")
    rc, _, err = run("disable", "dr_admin")
    assert rc == 2 and "last active admin" in err
    assert run("enable", "dr_a")[0] == 0 and accounts.authenticate("dr_a", "changed-pass-99").active

    # every change is in the log's chain, with who made it; no password is stored in clear
    report = verify_log(db)
    assert report.ok, report.lines()
    assert report.rows["account_events"] == 6  # refused changes wrote nothing
    con = sqlite3.connect(db)
    actions = con.execute("SELECT name, action, actor FROM account_events ORDER BY id").fetchall()
    con.close()
    assert [a[:2] for a in actions] == [
        ("dr_admin", "created"),
        ("dr_a", "created"),
        ("dr_a", "password"),
        ("dr_a", "role"),
        ("dr_a", "disabled"),
        ("dr_a", "enabled"),
    ]
    assert {a[2].split(":")[0] for a in actions} == {"cli"}
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())
    assert PASSWORD.encode() not in raw and b"changed-pass-99" not in raw


def test_users_add_asks_the_password_twice_without_stdin(db, monkeypatch, capsys):
    answers = iter([PASSWORD, PASSWORD + "-typo"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(SystemExit, match="differ"):
        main(["users", "add", "dr_c", "--db", str(db)])
    answers = iter([PASSWORD, PASSWORD])
    assert main(["users", "add", "dr_c", "--db", str(db)]) == 0
    assert Accounts(ReviewLog(db)).authenticate("dr_c", PASSWORD).name == "dr_c"


def test_sign_in_is_throttled_after_repeated_wrong_passwords(db):
    now = [1000.0]
    accounts = Accounts(ReviewLog(db), LoginThrottle(clock=lambda: now[0]))
    accounts.add("dr_a", PASSWORD, role="reader", actor="test")
    for _ in range(5):
        with pytest.raises(AuthError, match="Wrong name or password"):
            accounts.authenticate("dr_a", "wrong-password-x")
    with pytest.raises(AuthError, match=r"try again in 30 s"):
        accounts.authenticate("dr_a", PASSWORD)  # even the right password waits
    now[0] += 31
    with pytest.raises(AuthError, match="Wrong"):
        accounts.authenticate("dr_a", "wrong-password-x")
    with pytest.raises(AuthError, match=r"try again in 60 s"):
        accounts.authenticate("dr_a", PASSWORD)
    now[0] += 61
    assert accounts.authenticate("dr_a", PASSWORD).name == "dr_a"  # and the count starts again
    with pytest.raises(AuthError, match="Wrong"):
        accounts.authenticate("dr_a", "wrong-password-x")
    # an unknown name gets the same answer as a wrong password
    with pytest.raises(AuthError, match="Wrong name or password"):
        accounts.authenticate("nobody", PASSWORD)


def test_the_first_admin_can_be_created_only_on_a_log_without_accounts(db):
    accounts = Accounts(ReviewLog(db))
    assert not accounts.any()
    admin = accounts.create_first_admin("boss", PASSWORD)
    assert admin.is_admin and accounts.any()
    with pytest.raises(AccountError, match="exists already"):
        accounts.create_first_admin("intruder", PASSWORD)
    assert [a.name for a in accounts.all()] == ["boss"]
    with pytest.raises(AccountError, match="no account"):
        accounts.set_password("ghost", PASSWORD)
    with pytest.raises(AccountError, match="role"):
        accounts.add("dr_z", PASSWORD, role="superuser")
