"""A table of numbers found by a key of theirs, for the delta pipeline's per-file
indexes (droot.deploy.reuse, droot.ship.delta), which hold tens of thousands of entries."""

import os
import struct

_SLOT = struct.Struct("Q")
_LOW = (1 << 32) - 1
_MOVES_BETWEEN_TRIMS = 256  # when a table grows into a scratch file: ~1 MB of its pages


class IndexTable:
    """Numbers (member indexes, offsets in a record; below 2**32 - 1) found by a key of
    theirs (a path, a digest): open addressing, 8 bytes a slot, probed linearly, at most
    half full. A slot holds 32 bits of the key's hash() (its tag, whose low bits are
    where the probe starts) and the number + 1 (0: empty). A dict would hold each key as
    an object too, ~120 bytes an entry against 16 to 32 here. A slot is taken for a key
    only when the tags match and `holds(number, key)`, which compares the bytes stored
    for that number: keys of one hash never mix. The table grows from the tags alone,
    reading no key."""

    SLOTS = 1 << 16  # to start with, 512 KB: a Debian image's 20,000 members, not grown
    MEMORY_SLOTS = 1 << 20  # 8 MB, 524,288 keys: a larger table goes to the scratch file

    def __init__(self, holds, expected: int = 0, scratch=None):
        """`expected`: how many keys, if known (the table is made big enough at once);
        `scratch`: a droot.core.scratch.Scratch, where a table of more than MEMORY_SLOTS
        slots is kept (else in memory whatever its size)."""
        self._holds = holds
        self._scratch = scratch
        self._mask = max(self.SLOTS, 1 << (2 * expected).bit_length()) - 1
        self._slots = self._allocate(self._mask + 1)
        self._count = 0

    def _allocate(self, slots: int):
        if self._scratch is None or slots <= self.MEMORY_SLOTS:
            return memoryview(bytearray(8 * slots)).cast("Q")
        return _FileSlots(self._scratch.region(8 * slots))

    def close(self):
        """Give back the slots' room (the table is not used again)."""
        if isinstance(self._slots, _FileSlots):
            self._slots.close()

    def _slot(self, key) -> tuple[int, int]:
        """The slot holding `key`, or the empty one where it would go; and the key's tag."""
        slots, mask = self._slots, self._mask
        tag = (hash(key) >> 32) & _LOW
        slot = tag & mask
        while (at := slots[slot]) and not (at >> 32 == tag
                                           and self._holds((at & _LOW) - 1, key)):
            slot = (slot + 1) & mask
        return slot, tag

    def find(self, key) -> int:
        """The number stored for `key`, -1 if none."""
        return (self._slots[self._slot(key)[0]] & _LOW) - 1

    def put(self, key, number: int, replace: bool = True) -> int:
        """Store `number` for `key`, unless not `replace` and it has one; returns the
        number it had, -1 if none."""
        if not 0 <= number < _LOW:
            raise ValueError(f"{number}: not a number an IndexTable holds")
        if 2 * self._count >= self._mask:
            self._grow()
        slot, tag = self._slot(key)
        had = (self._slots[slot] & _LOW) - 1
        if had < 0:
            self._count += 1
        if had < 0 or replace:
            self._slots[slot] = tag << 32 | (number + 1)
        return had

    def _grow(self):
        old = self._slots
        self._mask = mask = 2 * self._mask + 1
        self._slots = slots = self._allocate(mask + 1)
        trim = self._scratch.trim if isinstance(slots, _FileSlots) else None
        for moved, at in enumerate(filter(None, old)):
            if trim and moved % _MOVES_BETWEEN_TRIMS == 0:
                trim()  # each move maps a page of the new slots: not all of them at once
            slot = (at >> 32) & mask
            while slots[slot]:
                slot = (slot + 1) & mask
            slots[slot] = at
        if isinstance(old, _FileSlots):
            old.close()


class _FileSlots:
    """Slots in a scratch region: read a slot at a time from its file (pread), never
    through the mapping, where a read of a page maps the 15 around it too (the kernel's
    fault-around), and the table's random reads would soon have all of it in the
    process's memory; written through the mapping (a write maps its own page only, let go
    at the next trim). Only for tables too big for memory: a syscall a read."""

    def __init__(self, region):
        self._region = region
        self._fd = region.fd
        self._count = len(region) // _SLOT.size
        self._written = memoryview(region.map).cast("Q")

    def __getitem__(self, slot: int) -> int:
        return _SLOT.unpack(os.pread(self._fd, _SLOT.size, _SLOT.size * slot))[0]

    def __setitem__(self, slot: int, value: int):
        self._written[slot] = value

    def __iter__(self):
        chunk = 1 << 17  # slots a read
        for start in range(0, self._count, chunk):
            yield from memoryview(os.pread(self._fd, _SLOT.size * chunk,
                                           _SLOT.size * start)).cast("Q")

    def close(self):
        self._written.release()
        self._region.close()
