"""Bounded retries of a whole pull, for the failures that may not happen again.

Only a TransientError (a refused or reset connection, a timeout, a 5xx answer, a download
cut short, the object replaced while it was read) is tried again; anything else (no such
object, access denied, a checksum or signature that does not match, a corrupt archive, a
full disk) fails at once: trying again would give the same answer. Each attempt is a
whole pull, and a failed one leaves the current release as it was (deploy removes its
staging directory), so the next starts from the same state.

The waits double from about a second, each drawn at random between half and one and a
half times its nominal value, so that a fleet which failed together does not come back
together; no wait is longer than 30 s nominal. With the default 3 retries the waits add up
to at most 10.5 s.
"""

import random
import sys
import time

from droot.core.errors import TransientError

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
DEFAULT_RETRIES = 3
MAX_RETRIES = 10


def delay(retry: int) -> float:
    """Seconds to wait before retry number `retry` (0 for the first)."""
    return min(MAX_DELAY, FIRST_DELAY * 2 ** retry) * random.uniform(0.5, 1.5)


def retrying(attempt, retries: int, what: str = "pull"):
    """attempt() until it returns, at most 1 + `retries` times; one line on stderr per
    failed attempt that is followed by another. The last failure is raised, saying how
    many attempts were made."""
    attempts = 1 + retries
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except TransientError as error:
            if number == attempts:
                if attempts > 1:
                    raise TransientError(f"{error} ({what} gave up after {attempts} "
                                         "attempts)") from None
                raise
            wait = delay(number - 1)
            print(f"droot: {what} attempt {number}/{attempts} failed: {error}; retrying in "
                  f"{wait:.1f} s", file=sys.stderr, flush=True)
            time.sleep(wait)
