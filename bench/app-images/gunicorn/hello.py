"""The Python web app of bench/apps.py: a WSGI app that answers a small page."""

BODY = b"droot bench: hello from a WSGI app\n" * 8


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
