"""Password hashing for reader accounts: scrypt (stdlib ``hashlib.scrypt``) with a per-password random salt.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt hex>$<key hex>`` (n = 2**14, r = 8, p = 1: 16 MiB and about
50 ms per check). It is compared in constant time (``hmac.compare_digest``); the cost parameters are read
from the hash, so they can be raised later without breaking older hashes, and are bounded so that a
tampered hash cannot make a check take unbounded memory or time. Passwords are never stored or logged.

    stored = hash_password("correct horse battery")
    verify_password("correct horse battery", stored)      # True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata

from ..errors import BoneAgeError

N, R, P, KEY_BYTES, SALT_BYTES = 2**14, 8, 1, 32, 16
#: Shortest and longest password accepted, in characters.
MIN_LENGTH, MAX_LENGTH = 10, 1024
_MAX_N = 2**20


class PasswordError(BoneAgeError, ValueError):
    """A password that does not meet the policy (too short, too long, blank)."""


def check_policy(password: str) -> str:
    """The password, NFC-normalised, when it is acceptable; else :class:`PasswordError` saying why."""
    if not isinstance(password, str):
        raise PasswordError("the password must be text")
    password = unicodedata.normalize("NFC", password)
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"the password must have at most {MAX_LENGTH} characters")
    if not password.strip() or len(set(password)) < 4:
        raise PasswordError("the password is too simple (use several different characters)")
    return password


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    data = unicodedata.normalize("NFC", password).encode("utf-8")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=256 * 1024 * 1024)


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` (checked against the policy first)."""
    password = check_policy(password)
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${N}${R}${P}${salt.hex()}${_derive(password, salt, N, R, P).hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a wrong password or a malformed hash."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        n, r, p = int(n), int(r), int(p)
        salt_bytes, key_bytes = bytes.fromhex(salt), bytes.fromhex(key)
    except (AttributeError, ValueError):
        return False
    if scheme != "scrypt" or not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4):
        return False
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    return hmac.compare_digest(_derive(password, salt_bytes, n, r, p), key_bytes)


#: A hash of nothing anyone knows: checked for unknown names, so that they take as long as known ones.
DUMMY_HASH = f"scrypt${N}${R}${P}${'00' * SALT_BYTES}${'00' * KEY_BYTES}"
