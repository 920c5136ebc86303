"""Receiving Courier's offline push webhook in Python (docs/operations.md).

Standard library only. Run as a script (as the tests do), it reads requests as
JSON lines on stdin, {"headers": {...}, "body": "<raw body, hex>"}, and
prints `accepted <key>`, `duplicate <key>` or `rejected` for each.
"""
import hashlib
import hmac
import json
import os
import sys


def signature_is_valid(raw_body: bytes, header: str, secret: str) -> bool:
    """True when `header` is `sha256=` + hex HMAC-SHA256 of the raw body bytes.

    Sign and compare bytes as received: parsing and re-serialising the JSON
    changes them, and the signature with them.
    """
    expected = "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), (header or "").encode())  # constant time


def handle_notice(raw_body: bytes, headers: dict, secret: str, seen: set) -> tuple:
    """What a handler does with one request: verify, then parse, then de-duplicate.

    `seen` stands for your database: record the key in the same transaction as
    the work (send the push), and answer 200 to a duplicate without doing it again.
    """
    if not signature_is_valid(raw_body, headers.get("x-courier-signature", ""), secret):
        return "rejected", None  # answer 401; Courier does not retry a 4xx
    notice = json.loads(raw_body)
    key = notice["idempotencyKey"]  # the same as the Idempotency-Key header
    if key in seen:
        return "duplicate", key
    seen.add(key)
    return "accepted", key


# With Flask, keep the raw bytes: handle_notice(request.get_data(), request.headers, SECRET, seen)
# (Flask's headers match case-insensitively; lower-case a plain dict's keys first).
if __name__ == "__main__":
    secret = os.environ["PUSH_WEBHOOK_SECRET"]
    seen = set()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        outcome, key = handle_notice(bytes.fromhex(request["body"]), request["headers"], secret, seen)
        print(f"{outcome} {key}" if key else outcome)
