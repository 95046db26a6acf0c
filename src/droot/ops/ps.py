"""`droot ps`: a table (or JSON) of the droot apps running on this host."""

import json

from droot.ops.apps import find_apps

COLUMNS = ("PID", "ROOT", "RELEASE", "USER", "UPTIME", "MEM", "CPU")


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def human_size(size: int) -> str:
    for unit in ("K", "M", "G"):
        size /= 1024
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if size >= 10 else f"{size:.1f}{unit}"


def release_label(app: dict) -> str:
    """The release directory's name when the root is a link to it; the path otherwise."""
    if app["release"] != app["root"]:
        return app["release"].rsplit("/", 1)[-1]
    return "-"


def printable(text: str) -> str:
    """`text` with its control characters escaped: the user name is the app's (its
    /etc/passwd), and an escape sequence in it would reach the operator's terminal
    (clipboard writes, a line of the table erased or forged)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def ps(as_json: bool, write) -> int:
    apps = [app.describe() for app in find_apps()]
    if as_json:
        write(json.dumps(apps, indent=2) + "\n")
        return 0
    rows = [COLUMNS] + [(str(a["pid"]), printable(a["root"]), printable(release_label(a)),
                         printable(a["user"]), human_duration(a["uptime_seconds"]),
                         human_size(a["rss_bytes"]), f"{a['cpu_percent']:.1f}%") for a in apps]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")
    return 0
