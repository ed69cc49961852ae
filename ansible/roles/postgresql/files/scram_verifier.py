"""Reads {"password": ..., "current": <rolpassword or null>} on stdin and prints
"ok" when the current SCRAM-SHA-256 verifier matches the password, otherwise a
new verifier (random salt) to store with ALTER ROLE ... PASSWORD. The server
never sees the password in clear, so it cannot end up in a server log."""
import base64
import hashlib
import hmac
import json
import os
import sys
import unicodedata


def verifier(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (
        iterations, b64(salt), b64(hashlib.sha256(client_key).digest()), b64(server_key))


def main():
    data = json.load(sys.stdin)
    # SASLprep, as far as it matters in practice: NFKC normalization.
    password = unicodedata.normalize("NFKC", data["password"]).encode("utf-8")
    current = data.get("current") or ""
    if current.startswith("SCRAM-SHA-256$"):
        try:
            iterations, salt = current.split("$")[1].split(":")
            if hmac.compare_digest(verifier(password, base64.b64decode(salt), int(iterations)), current):
                print("ok")
                return
        except (ValueError, IndexError):
            pass
    print(verifier(password, os.urandom(16), 4096))


main()
