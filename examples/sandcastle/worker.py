"""A worker fed by the `orders` topic: Pub/Sub pushes each message to /events/orders."""

import base64
import json

from common import serve

orders = []


def push(request):
    envelope = json.loads(request.body or b"{}")
    message = envelope.get("message", {})
    data = base64.b64decode(message.get("data", "")).decode(errors="replace")
    orders.append({"data": data, "attributes": message.get("attributes", {})})
    print("order", data, flush=True)
    return 204, b""


serve({
    ("GET", "/healthz"): lambda r: (200, {"ok": True}),
    ("POST", "/events/orders"): push,
    ("GET", "/orders"): lambda r: (200, {"orders": orders}),
})
