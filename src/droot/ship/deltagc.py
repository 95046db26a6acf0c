"""`droot gc STORE`: remove from a delta store (droot.ship.deltastore) what no kept release
needs. docs/ship.md states the rule; in short:

- The releases are the markers whose manifest still holds the bytes the marker names
  (a manifest overwritten by a later push to the same name is that push's release). The
  `keep` newest (by marker time, then by the push time the marker holds: S3 dates to the
  second) are kept; the older ones go: manifest, its sidecar and signature, then the
  marker (in that order: an interrupted gc leaves a marker without a manifest, which the
  next gc removes, never a manifest nobody lists).
- A pack (and its sidecar) goes when no manifest that survives this gc references it.
- Nothing younger than `grace` seconds is deleted, and the age is read again (HEAD,
  lstat) just before each deletion. A push in flight has written packs but not yet its
  manifest, and it re-marked (refreshed the age of) the older packs it references before
  uploading: all of them are young while it runs, so a grace longer than the longest
  push keeps them. A dropped release's manifest rewritten meanwhile is young too, and
  kept, with its packs.
"""

import hashlib
import sys

from droot.core.errors import DrootError, UsageError
from droot.ship import deltastore, stores
from droot.ship.delta import Manifest

DEFAULT_KEEP = 5          # as many as a push reuses content from (delta.KNOWN_RELEASES)
DEFAULT_GRACE = 24 * 3600


def _store(text: str):
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise UsageError(f"{text}: expected s3://BUCKET or s3://BUCKET/PREFIX")
        return deltastore.open_store(stores.Location("s3", text, bucket=bucket, key=prefix),
                                     whole=True)
    location = stores.parse(text)
    if location.kind != "path":
        raise UsageError(f"{text}: gc works on an s3:// prefix or a directory")
    return deltastore.open_store(location, whole=True)


def _pack_of(name: str) -> str | None:
    """The pack an object under packs/ belongs to (the pack or its sidecar, signature);
    None for a name droot does not make (left alone)."""
    base = name.rpartition("/")[2]
    stem, dot, rest = base.partition(".")
    pack = f"{stem}.pack"
    if rest not in ("pack", "pack.sha256", "pack.sha256.sig"):
        return None
    try:
        return deltastore.check_pack_name(pack)
    except DrootError:
        return None


class _Collector:
    def __init__(self, store, grace: float):
        self.store = store
        self.grace = grace
        self.removed = 0   # objects
        self.spared = 0    # objects younger than the grace period

    def remove(self, name: str, listed_age: float | None = None) -> bool:
        """Delete `name` if it is older than the grace period, asked just before; True
        when it is gone."""
        if listed_age is not None and listed_age <= self.grace:
            self.spared += 1
            return False
        age = self.store.age(name)
        if age is None:
            return True
        if age <= self.grace:
            self.spared += 1
            return False
        self.delete(name)
        return True

    def delete(self, name: str):
        self.store.delete(name)
        self.removed += 1


def gc(text: str, keep: int = DEFAULT_KEEP, grace: float = DEFAULT_GRACE) -> dict:
    """Remove what no kept release needs from the delta store `text`; returns counts."""
    import time
    if keep < 1:
        raise UsageError("gc: --keep must be 1 or more (the newest release is always kept)")
    if grace < 0:
        raise UsageError("gc: --grace must be 0 or more seconds")
    store = _store(text)
    markers = deltastore.releases_newest_first(store)
    packs = store.listing(deltastore.PACKS)
    if not markers and not packs:
        raise DrootError(f"{text}: no delta releases there (nothing under "
                         f"{deltastore.DELTA_DIR}/)")
    collector = _Collector(store, grace)
    live, stale = [], []
    for marker, name in markers:
        manifest = _manifest_of(store, marker, name)
        (live if manifest else stale).append((marker, manifest))
    referenced = set()
    for marker, (name, manifest) in live[:keep]:
        referenced.update(manifest.packs)
    dropped = stale_removed = 0
    for marker, (name, manifest) in live[keep:]:
        if not collector.remove(name):  # young: kept, with what it references
            referenced.update(manifest.packs)
            continue
        for suffix in (stores.SIDECAR_SUFFIX, stores.SIGNATURE_SUFFIX):
            collector.remove(name + suffix)
        collector.remove(marker)
        dropped += 1
    for marker, _ in stale:
        stale_removed += collector.remove(marker)
    # A pack and its sidecar go together, on the pack's age (a push re-marks the pack).
    removed_packs = 0
    listed = {}
    for name, modified in packs:
        pack = _pack_of(name)
        if pack is not None and pack not in referenced:
            listed.setdefault(pack, []).append((name, modified))
    for pack, members in listed.items():
        path = f"{deltastore.PACKS}/{pack}"
        ages = {name: time.time() - modified for name, modified in members}
        if path not in ages:  # a sidecar without its pack (a gc interrupted in between)
            for name, age in ages.items():
                collector.remove(name, age)
        elif collector.remove(path, ages[path]):
            removed_packs += 1
            for name in ages.keys() - {path}:
                collector.delete(name)
    return {"kept": min(keep, len(live)), "dropped": dropped, "stale": stale_removed,
            "referenced_packs": len(referenced), "removed_packs": removed_packs,
            "removed_objects": collector.removed, "spared_objects": collector.spared}


def _manifest_of(store, marker: str, name: str | None):
    """(name, Manifest) of the release `marker` names, None when its manifest is gone or
    holds other bytes now (overwritten by a later push to the same name)."""
    if name is None:
        return None
    digest = marker.rpartition("/")[2]
    try:
        data = store.read(name)
    except deltastore.Missing:  # removed since the listing (another gc)
        return None
    if hashlib.sha256(data).hexdigest() != digest:
        return None
    return name, Manifest(data, name)


def report(summary: dict, text: str):
    print(f"droot: gc {text}: kept {summary['kept']} release(s) referencing "
          f"{summary['referenced_packs']} pack(s); removed {summary['dropped']} older "
          f"release(s), {summary['stale']} stale marker(s) and {summary['removed_packs']} "
          f"unreferenced pack(s) ({summary['removed_objects']} objects); spared "
          f"{summary['spared_objects']} object(s) younger than --grace", file=sys.stderr)
