"""Bearer tokens: shown once, stored as HMAC-SHA256 with a per-token salt, compared in constant time.

A token reads `mlt_<id>_<secret>`: the public id finds the row, the secret is checked against its
hash. Unknown ids still run one comparison so a wrong token costs the same as a wrong secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from malenia.errors import InputError
from malenia.server.store import Store, now

TOKEN_RE = re.compile(r"^mlt_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")
NAME_RE = re.compile(r"^[A-Za-z0-9 ._@-]{1,64}$")
_DUMMY_SALT = bytes(16)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    created: float
    revoked: float | None
    last_used: float | None

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "created": self.created, "revoked": self.revoked,
                "last_used": self.last_used}


def _digest(salt: bytes, secret: str) -> str:
    return hmac.new(salt, secret.encode("utf-8"), hashlib.sha256).hexdigest()


class TokenStore:
    def __init__(self, store: Store):
        self.store = store

    def count(self) -> int:
        return int(self.store.query_one("SELECT COUNT(*) FROM tokens")[0])

    def add(self, name: str) -> tuple[str, TokenInfo]:
        """Creates a token; returns (the token text, shown only now, and its info)."""
        if not NAME_RE.match(name):
            raise InputError(f"token name must be 1-64 letters, digits, spaces or ._@- , got {name!r}")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        created = now()
        with self.store.transaction() as db:
            while True:
                token_id = secrets.token_hex(4)
                if not db.execute("SELECT 1 FROM tokens WHERE id=?", (token_id,)).fetchone():
                    break
            db.execute("INSERT INTO tokens(id, name, salt, hash, created) VALUES(?,?,?,?,?)",
                       (token_id, name, salt.hex(), _digest(salt, secret), created))
        return f"mlt_{token_id}_{secret}", TokenInfo(token_id, name, created, None, None)

    def revoke(self, token_id_or_name: str) -> list[TokenInfo]:
        rows = self.store.query("SELECT * FROM tokens WHERE (id=? OR name=?) AND revoked IS NULL",
                                (token_id_or_name, token_id_or_name))
        if not rows:
            raise InputError(f"no active token with id or name {token_id_or_name!r}")
        t = now()
        with self.store.transaction() as db:
            for row in rows:
                db.execute("UPDATE tokens SET revoked=? WHERE id=?", (t, row["id"]))
        return [TokenInfo(r["id"], r["name"], r["created"], t, r["last_used"]) for r in rows]

    def list(self) -> list[TokenInfo]:
        return [TokenInfo(r["id"], r["name"], r["created"], r["revoked"], r["last_used"])
                for r in self.store.query("SELECT * FROM tokens ORDER BY created")]

    def verify(self, token: str | None) -> TokenInfo | None:
        """The token's info when it is valid and not revoked, else None."""
        match = TOKEN_RE.match(token or "")
        row = self.store.get("SELECT * FROM tokens WHERE id=?", (match.group(1),)) if match else None
        secret = match.group(2) if match else "x"
        if row is None:
            hmac.compare_digest(_digest(_DUMMY_SALT, secret), "0" * 64)
            return None
        ok = hmac.compare_digest(_digest(bytes.fromhex(row["salt"]), secret), row["hash"])
        if not ok or row["revoked"] is not None:
            return None
        t = now()
        if not row["last_used"] or t - row["last_used"] > 60:  # keep writes rare
            self.store.execute("UPDATE tokens SET last_used=? WHERE id=?", (t, row["id"]))
        return TokenInfo(row["id"], row["name"], row["created"], None, t)
