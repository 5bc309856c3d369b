"""The accounts of ``bsi-d2 serve``: a TOML file of user names and salted argon2id hashes.

::

    [users."alice"]
    hash = "$argon2id$v=19$m=65536,t=3,p=4$..."
    admin = false

The file is written by ``bsi-d2 serve --add-user NAME [--admin]`` (:func:`add_user`), atomically
and readable by its owner only; the server reads it again when it changes, so an account added,
changed or removed takes effect without a restart (a removed account's sessions end at their
next request). A password never leaves this module: only its hash is stored, and a login for a
name that does not exist still costs one hash verification, so timing does not tell names apart.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsi_d2.io.files import atomic_path
from bsi_d2.web import require

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_PASSWORD_LENGTH = 10
HEADER = "# bsi-d2 serve accounts: argon2id hashes only (bsi-d2 serve --add-user NAME [--admin])\n"


class UsersFileError(ValueError):
    """The accounts file is unreadable or malformed; the message says where."""


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


def password_hasher() -> Any:
    """argon2-cffi's hasher with its defaults (argon2id, 64 MiB, 3 passes, 16-byte salt)."""
    return require("argon2").PasswordHasher()


def check_user_name(name: str) -> str:
    """``name`` if it is 1-64 letters, digits, ``.``, ``_`` or ``-`` (not leading); else
    ValueError."""
    if not USER_NAME.fullmatch(name or ""):
        raise ValueError(
            f"user name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


def read_users(path: str | Path) -> dict[str, dict[str, Any]]:
    """name -> {"hash", "admin"} from the accounts file; {} where it does not exist."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        document = _parse_toml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UsersFileError(f"{path}: not a readable accounts file ({error})") from error
    users = document.get("users", {})
    if not isinstance(users, dict):
        raise UsersFileError(f"{path}: [users] must be a table of accounts")
    entries = {}
    for name, entry in users.items():
        if not (USER_NAME.fullmatch(name) and isinstance(entry, dict)):
            raise UsersFileError(f"{path}: account {name!r} is malformed")
        if not str(entry.get("hash", "")).startswith("$argon2"):
            raise UsersFileError(f"{path}: account {name!r} has no argon2 hash")
        entries[name] = {"hash": str(entry["hash"]), "admin": bool(entry.get("admin", False))}
    return entries


TABLE_LINE = re.compile(r'\[users\.(?:"([^"\\]*)"|([A-Za-z0-9._-]+))\]')
VALUE_LINE = re.compile(r'(hash|admin)\s*=\s*("(?:[^"\\]|\\.)*"|true|false)')


def _parse_toml(text: str) -> dict[str, Any]:
    """The accounts file as a dict: by ``tomllib`` (Python 3.11+); on Python 3.10, which has
    none, the format :func:`users_toml` writes, line by line (anything else is refused)."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    users: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        table, value = TABLE_LINE.fullmatch(line), VALUE_LINE.fullmatch(line)
        if table:
            current = users.setdefault(table.group(1) or table.group(2), {})
        elif value and current is not None:
            text_value = value.group(2)
            current[value.group(1)] = (
                json.loads(text_value) if text_value.startswith('"') else text_value == "true"
            )
        else:
            raise ValueError(f"line {number}: only the format --add-user writes is read here")
    return {"users": users}


def users_toml(entries: dict[str, dict[str, Any]]) -> str:
    """The accounts file's text (JSON string escapes are TOML basic-string escapes)."""
    blocks = [HEADER]
    for name in sorted(entries):
        entry = entries[name]
        blocks.append(
            f"\n[users.{json.dumps(name)}]\nhash = {json.dumps(entry['hash'])}\n"
            f"admin = {'true' if entry.get('admin') else 'false'}\n"
        )
    return "".join(blocks)


def add_user(path: str | Path, name: str, password: str, admin: bool = False) -> bool:
    """Add account ``name`` (or set its password and role); True where it is new. The file is
    replaced atomically, mode 0600."""
    check_user_name(name)
    check_password(password)
    path = Path(path)
    entries = read_users(path)
    created = name not in entries
    entries[name] = {"hash": password_hasher().hash(password), "admin": bool(admin)}
    with atomic_path(path) as tmp:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(users_toml(entries))
    return created


class UserStore:
    """The accounts of a users file, read again whenever the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._dummy: str | None = None

    def entries(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                self._entries = read_users(self.path) if stamp else {}
                self._stamp = stamp
            return self._entries

    def get(self, name: str | None) -> User | None:
        entry = self.entries().get(name or "")
        return None if entry is None else User(str(name), entry["admin"])

    def authenticate(self, name: str, password: str) -> User | None:
        """The user whose password this is, or None (unknown name or wrong password)."""
        errors = require("argon2.exceptions")
        hasher = password_hasher()
        entry = self.entries().get(name) if USER_NAME.fullmatch(name or "") else None
        if entry is None:
            if self._dummy is None:
                self._dummy = hasher.hash("not an account of this server")
            digest = self._dummy
        else:
            digest = entry["hash"]
        try:
            hasher.verify(digest, password)
        except (errors.VerificationError, errors.InvalidHashError):
            return None
        return None if entry is None else User(name, entry["admin"])
