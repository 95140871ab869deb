"""Minimal Blooio webhook receiver that verifies X-Blooio-Signature (stdlib only).

The signing secret is read from a file, the Secret that blooio-operator writes,
mounted as a volume (key `signing-secret`). It is re-read on every request: when the
secret is rotated, Blooio stops signing with the old value at once, and the kubelet
updates the mounted file within a minute or two, so no restart is needed.

    BLOOIO_SIGNING_SECRET_FILE  path of the secret file (default /etc/blooio/signing-secret)
    PORT                        port to listen on (default 8080; 0 picks a free one)
    HOST                        address to bind (default 0.0.0.0)

Answers 204 to a correctly signed POST, 401 otherwise, 503 if no secret is available.
GET /healthz answers 200. The signature is `t=<unix seconds>,v1=<hex>`, where hex is
HMAC-SHA256(secret, f"{t}." + raw body); deliveries more than 300 s away from the
receiver's clock are refused to limit replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_SECRET_FILE = "/etc/blooio/signing-secret"
TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_HEADERS = ("X-Blooio-Signature", "Blooio-Signature")


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether `header` is a valid, fresh signature of `body` under `secret`."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    # Several v1 values may be sent; compare each in constant time.
    return any(hmac.compare_digest(expected, c) for c in candidates)


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Handler(BaseHTTPRequestHandler):
    secret_file = Path(os.environ.get("BLOOIO_SIGNING_SECRET_FILE", DEFAULT_SECRET_FILE))

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self.reply(413)
        body = self.rfile.read(length)
        secret = read_secret(self.secret_file)
        if secret is None:
            return self.reply(503)
        header = next((self.headers[h] for h in SIGNATURE_HEADERS if self.headers[h]), "")
        if not verify_signature(secret, header, body):
            return self.reply(401)
        try:
            event = json.loads(body)
        except ValueError:
            return self.reply(400)
        # Handle the event here; answer fast and do slow work asynchronously.
        # One write per line: requests are served on threads, and print() writes the
        # text and the newline separately, so two lines could run together.
        sys.stdout.write(f"received {event.get('type')} {event.get('id')}\n")
        sys.stdout.flush()
        return self.reply(204)

    def reply(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a server inside a pod
    # As a container's PID 1 the process has no default SIGTERM action: without a handler
    # it ignores the kubelet's SIGTERM and every pod deletion waits out the grace period.
    # Installed before "listening": a SIGTERM right after that line must stop it cleanly.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server = ThreadingHTTPServer((host, int(os.environ.get("PORT", "8080"))), Handler)
    print(f"listening on {host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        print("SIGTERM: stopped", flush=True)
        server.server_close()


if __name__ == "__main__":
    main()
