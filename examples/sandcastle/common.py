"""What the example services share: a small threaded HTTP server on $PORT, with Python 3 alone."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(routes):
    """Serves `routes`, a dict of (method, path) -> handler(request) returning (status, body)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without this, each answer on a kept-alive
        # connection waits for a delayed ACK.
        disable_nagle_algorithm = True

        def handle_any(self, method):
            length = int(self.headers.get("content-length") or 0)
            self.body = self.rfile.read(length) if length else b""
            handler = routes.get((method, self.path.split("?")[0]))
            status, body = handler(self) if handler else (404, {"error": "not found"})
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def log_message(self, format, *args):
            # The Common Log Format request line and status: `"GET /healthz HTTP/1.1" 200 -`.
            sys.stderr.write((format % args) + "\n")

    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print("listening on", server.server_address[1], flush=True)
    server.serve_forever()
