"""A table of numbers found by a key of theirs, for the delta pipeline's per-file
indexes (droot.deploy.reuse, droot.ship.delta), which hold tens of thousands of entries."""

import array


class IndexTable:
    """Numbers (member indexes, offsets in a record) found by a key of theirs (a path, a
    digest): open addressing, 8 bytes a slot (number + 1; 0: empty), probed linearly from
    the key's hash(), at most half full. A dict would hold each key as an object too,
    ~120 bytes an entry against 16 to 32 here. A slot is taken for a key only when
    `holds(number, key)`, which compares the bytes stored for that number: keys of one
    hash never mix."""

    SLOTS = 1 << 16  # to start with, 512 KB: a Debian image's 20,000 members, not grown

    def __init__(self, holds, key_of, expected: int = 0):
        """`key_of(number)`: its key as stored, to grow the table; `expected`: how many
        keys, if known (the table is made big enough at once)."""
        self._holds = holds
        self._key_of = key_of
        self._mask = max(self.SLOTS, 1 << (2 * expected).bit_length()) - 1
        self._slots = array.array("q", bytes(8 * (self._mask + 1)))
        self._count = 0

    def _slot(self, key) -> int:
        """The slot holding `key`, or the empty one where it would go."""
        slots, mask = self._slots, self._mask
        slot = hash(key) & mask
        while (at := slots[slot]) and not self._holds(at - 1, key):
            slot = (slot + 1) & mask
        return slot

    def find(self, key) -> int:
        """The number stored for `key`, -1 if none."""
        return self._slots[self._slot(key)] - 1

    def put(self, key, number: int, replace: bool = True) -> int:
        """Store `number` for `key`, unless not `replace` and it has one; returns the
        number it had, -1 if none."""
        if 2 * self._count >= self._mask:
            self._grow()
        slot = self._slot(key)
        had = self._slots[slot] - 1
        if had < 0:
            self._count += 1
        if had < 0 or replace:
            self._slots[slot] = number + 1
        return had

    def _grow(self):
        old = self._slots
        self._mask = mask = 2 * self._mask + 1
        self._slots = slots = array.array("q", bytes(8 * (mask + 1)))
        for at in old:
            if at:
                slot = hash(self._key_of(at - 1)) & mask
                while slots[slot]:
                    slot = (slot + 1) & mask
                slots[slot] = at
