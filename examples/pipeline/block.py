"""One block of the pipeline example. `python3 block.py NAME` serves $PORT; GET / answers with the
chain of blocks behind it, calling the next one through the URL Mahavishnu gives it (`<NEXT>_URL`).
A block that publishes tells the audit topic about each request; the audit block counts them."""

import base64
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1]
NEXT = {"gateway": "AUTH_URL", "auth": "API_URL", "api": "DB_URL"}.get(NAME)
audited = []


def publish(data):
    topic = os.environ.get("AUDIT_EVENTS_TOPIC")
    if not topic:
        return
    body = json.dumps({"messages": [{"data": base64.b64encode(data.encode()).decode()}]}).encode()
    request = urllib.request.Request(
        f"http://{os.environ['PUBSUB_EMULATOR_HOST']}/v1/{topic}:publish",
        data=body, headers={"content-type": "application/json"})
    urllib.request.urlopen(request, timeout=5).read()


class Block(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self.answer(200, {"ok": True})
        if self.path == "/audited":
            return self.answer(200, {"audited": audited})
        chain = [NAME]
        target = os.environ.get(NEXT) if NEXT else None
        if target and target.startswith("http"):
            with urllib.request.urlopen(target + "/", timeout=5) as reply:
                chain += json.load(reply)["chain"]
        elif target:
            chain.append(target)
        publish(" -> ".join(chain))
        self.answer(200, {"chain": chain})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        envelope = json.loads(self.rfile.read(length) or b"{}")
        data = base64.b64decode(envelope.get("message", {}).get("data", "")).decode()
        audited.append(data)
        self.answer(200, {"audited": len(audited)})

    def log_message(self, format, *args):
        # The Common Log Format request line and status: `"GET /healthz HTTP/1.1" 200 -`.
        sys.stderr.write((format % args) + "\n")


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Block)
print(NAME, "listening on", server.server_address[1], flush=True)
server.serve_forever()
