"""The --check of the restart tests: exit 0 when http://127.0.0.1:PORT/ answers 200 with
the body of the release being checked ($DROOT_RELEASE_DIR/body), else one line why not."""

import os
import sys
import urllib.request

port = sys.argv[1]
with open(os.path.join(os.environ["DROOT_RELEASE_DIR"], "body")) as file:
    expected = file.read()
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        body = response.read().decode()
except Exception as error:  # refused, reset, HTTP 500: all mean "not healthy"
    sys.exit(f"no good answer: {error}")
if body != expected:
    sys.exit(f"answered {body!r}, not {expected!r} (an older worker still serves)")
