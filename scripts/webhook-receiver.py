#!/usr/bin/env python3
"""A webhook receiver for trying the notifier out: prints every delivery it gets and answers 204.

    python3 -m pip install --user --break-system-packages standardwebhooks   # see README.md
    python3 scripts/webhook-receiver.py [port] [secret] [address]

With the subscription's secret (`whsec_...`) it verifies each delivery with the Standard Webhooks
library, as a receiver should: the signature over `webhook-id.webhook-timestamp.body`, and the
timestamp within five minutes of now (an older or newer one is a replay or a clock problem).
A delivery that does not verify is answered 401, so the notifier records it as failed.

It listens on 127.0.0.1 unless given another address: `0.0.0.0` for a notifier in a container
(docker compose), which reaches this machine as host.docker.internal.
"""

import http.server
import sys

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError:
    sys.exit("needs the Standard Webhooks library: "
             "python3 -m pip install --user --break-system-packages standardwebhooks")


class Receiver(http.server.BaseHTTPRequestHandler):
    webhook = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        status, check = 204, ""
        if self.webhook:
            try:
                self.webhook.verify(body, dict(self.headers.items()), json_parse=False)
                check = " verified"
            except WebhookVerificationError as e:
                status, check = 401, f" NOT VERIFIED ({e})"
        print(f"webhook-id: {self.headers['webhook-id']}{check}\n  {body.decode()}", flush=True)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    if len(sys.argv) > 2:
        Receiver.webhook = Webhook(sys.argv[2])
    address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    print(f"Listening on http://{address}:{port}/", flush=True)
    http.server.HTTPServer((address, port), Receiver).serve_forever()
