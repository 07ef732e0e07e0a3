"""Internal webhooks: the web service calls them for every order."""

from common import serve

received = []


def hook(request):
    received.append(request.body.decode())
    return 200, {"received": len(received)}


serve({
    ("GET", "/healthz"): lambda r: (200, {"ok": True}),
    ("POST", "/hooks/order"): hook,
    ("GET", "/hooks"): lambda r: (200, {"received": len(received)}),
})
