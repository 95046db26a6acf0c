"""Progress of long transfers on a terminal: bytes, rate and ETA on one stderr line.

Silent unless stderr is a terminal, so pipes, logs and CI stay clean."""

import sys
import time

REFRESH_SECONDS = 0.2


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """Call update(n) for every n bytes moved, set `note` for extra context (e.g. the
    layer), and close() at the end. `total` (bytes) enables a percentage and an ETA."""

    def __init__(self, label: str, total: int | None = None, stream=None):
        self.label = label
        self.total = total
        self.note = ""
        self.done = 0
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._start = self._last = time.monotonic()

    def update(self, n: int):
        self.done += n
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= REFRESH_SECONDS:
                self._last = now
                self._draw(now)

    def _draw(self, now: float, final: bool = False):
        elapsed = max(now - self._start, 1e-6)
        rate = self.done / elapsed
        parts = [f"{self.label}: {_size(self.done)}"]
        if self.total:
            parts.append(f"of {_size(self.total)} ({100 * self.done / self.total:.0f}%)")
        parts.append(f"{_size(rate)}/s")
        if self.total and rate > 0 and not final:
            parts.append(f"ETA {max(self.total - self.done, 0) / rate:.0f} s")
        if self.note:
            parts.append(self.note)
        self._stream.write("\r\x1b[K" + "  ".join(parts) + ("\n" if final else ""))
        self._stream.flush()

    def close(self):
        if self.enabled:
            self._draw(time.monotonic(), final=True)
            self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
