"""The public web service: greets, takes orders (published to the `orders` topic) and calls the
internal webhooks. It reaches them through the URLs Mahavishnu gives it."""

import base64
import json
import os
import urllib.request

from common import serve

GREETING = os.environ.get("GREETING", "hello")
REGION = os.environ.get("MAHAVISHNU_REGION", "local")
# The secret arrives in the environment only; the service never prints it.
assert os.environ.get("SESSION_KEY"), "SESSION_KEY is not set"


def publish(topic, data):
    """Publishes through the Pub/Sub emulator's REST API (a client library would read the same variable)."""
    host = os.environ["PUBSUB_EMULATOR_HOST"]
    body = json.dumps({"messages": [{"data": base64.b64encode(data.encode()).decode()}]}).encode()
    request = urllib.request.Request(f"http://{host}/v1/{topic}:publish", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)["messageIds"][0]


def order(request):
    item = json.loads(request.body or b"{}").get("item", "tea")
    message_id = publish(os.environ["ORDERS_TOPIC"], item)
    hook = urllib.request.Request(os.environ["WEBHOOKS_URL"] + "/hooks/order", data=item.encode())
    urllib.request.urlopen(hook, timeout=5).read()
    return 202, {"item": item, "message": message_id, "region": REGION}


serve({
    ("GET", "/healthz"): lambda r: (200, {"ok": True}),
    ("GET", "/"): lambda r: (200, {"greeting": GREETING, "region": REGION}),
    ("POST", "/orders"): order,
})
