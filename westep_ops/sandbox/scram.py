"""SCRAM-SHA-256 verifiers, so plaintext passwords never reach SQL text or server logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os


def scram_verifier(password: str, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` string PostgreSQL stores."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
