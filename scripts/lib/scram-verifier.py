"""Reads a password on stdin; prints its SCRAM-SHA-256 verifier, as PostgreSQL
stores it (RFC 5802 / RFC 7677, 4096 iterations, a random 16-byte salt).

scripts/deploy sends the verifier, never the password, to the migrate task,
which sets it as the writer role's password: PostgreSQL stores a verifier it
is given as it is. The password must be ASCII (PostgreSQL's SASLprep leaves
it unchanged then): the template generates the writer's without punctuation. consumer-lambda/tests/roles.rs logs in with the password
against a verifier made here.
"""

import base64
import hashlib
import hmac
import os
import sys

ITERATIONS = 4096


def verifier(password: bytes, salt: bytes) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")
    return f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


if __name__ == "__main__":
    password = sys.stdin.buffer.read().rstrip(b"\n")
    if not password or not password.isascii():
        sys.exit("scram-verifier: give an ASCII password on stdin")
    print(verifier(password, os.urandom(16)))
