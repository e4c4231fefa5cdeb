#!/usr/bin/env python3
"""A webhook receiver for trying the notifier out: prints every delivery it gets and answers 204.

    python3 scripts/webhook-receiver.py [port] [secret]

With the subscription's secret (`whsec_...`) it also checks the Standard Webhooks signature
(HMAC-SHA256 over `webhook-id.webhook-timestamp.body`) and says whether it verifies. Standard
library only.
"""

import base64
import hashlib
import hmac
import http.server
import sys


def verifies(secret, headers, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split(" "))


class Receiver(http.server.BaseHTTPRequestHandler):
    secret = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        check = ""
        if self.secret:
            check = " signature " + ("verified" if verifies(self.secret, self.headers, body) else "INVALID")
        print(f"webhook-id: {self.headers['webhook-id']}{check}\n  {body.decode()}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    Receiver.secret = sys.argv[2] if len(sys.argv) > 2 else None
    print(f"Listening on http://127.0.0.1:{port}/", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
