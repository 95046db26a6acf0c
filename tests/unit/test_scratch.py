"""droot.core.scratch: the regions a delta pull keeps its tables of every member in, on the
disk: what is written stays after a trim, which gives the pages back; a forked child
reads what the parent wrote, past its own mapping too; a directory that cannot hold them
gives memory instead, or one clear error when the room runs out mid-way."""

import os
import re

import pytest

from droot.core import scratch
from droot.core.errors import DrootError
from droot.core.indextable import IndexTable
from tests.conftest import small_tmpfs


def resident_kb(region: scratch.Region) -> int:
    """How much of `region`'s mapping is in this process's memory (smaps' Rss)."""
    start = f"{id_of(region):x}-"
    lines = open("/proc/self/smaps").read().splitlines()
    for number, line in enumerate(lines):
        if line.startswith(start):
            return next(int(entry.split()[1]) for entry in lines[number + 1:]
                        if entry.startswith("Rss:"))
    raise AssertionError("the region is not mapped")


def id_of(region: scratch.Region) -> int:
    """The address `region` is mapped at."""
    import ctypes
    return ctypes.addressof(ctypes.c_char.from_buffer(region.map))


def test_a_trim_gives_the_pages_back_and_keeps_what_was_written(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    pool = scratch.Scratch()
    try:
        region = pool.region(8 << 20)
        assert region.on_disk
        for offset in range(0, 8 << 20, 4096):
            region.map[offset:offset + 8] = offset.to_bytes(8, "little")
        assert resident_kb(region) >= 8 << 10
        pool.trim()
        assert resident_kb(region) == 0
        assert all(region.map[offset:offset + 8] == offset.to_bytes(8, "little")
                   for offset in range(0, 8 << 20, 4096))
    finally:
        pool.close()
    assert os.listdir(tmp_path) == []  # unlinked from the start


def test_a_child_reads_what_the_parent_wrote_past_its_own_mapping(tmp_path, monkeypatch):
    """The extraction child is forked before the plan grows the paths' region: its
    mapping is the smaller one, and read() finds the rest in the file."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    pool = scratch.Scratch()
    try:
        region = pool.region(4096)
        ready, go = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: wait for the parent's writes, then check them
            os.read(ready, 1)
            seen = region.map[:5] == b"first" and region.read(6, 1 << 20) == b"second"
            os._exit(0 if seen and len(region.map) == 4096 else 1)
        region.map[:5] = b"first"
        region.grow((1 << 20) + 6)
        region.map[1 << 20:(1 << 20) + 6] = b"second"
        os.write(go, b"x")
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        pool.close()


def test_a_directory_that_cannot_hold_scratch_gives_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    pool = scratch.Scratch()
    try:
        region = pool.region(1 << 20)
        assert not region.on_disk
        region.map[:4] = b"data"
        region.grow(4 << 20)
        assert region.read(4, 0) == b"data"
    finally:
        pool.close()


@pytest.fixture
def small(tmp_path):
    """A 1 MiB tmpfs of the test's own."""
    with small_tmpfs(tmp_path / "small", "1m") as mountpoint:
        yield mountpoint


def test_room_running_out_is_one_clear_error(small, monkeypatch):
    """Blocks are allocated as a region is made or grown: a full filesystem is a
    DrootError that says where, not a SIGBUS at the first write into the mapping."""
    monkeypatch.setenv("TMPDIR", str(small))
    pool = scratch.Scratch()
    try:
        region = pool.region(256 << 10)
        assert region.on_disk
        with pytest.raises(DrootError, match=re.escape(
                f"no room for a delta pull's tables in {small} (No space left on "
                "device): set TMPDIR to a directory with room")):
            region.grow(4 << 20)
        assert not pool.region(4 << 20).on_disk  # a new one: in memory then
        sparse = pool.region(4 << 20, allocated=0)  # its blocks allocated as it is used
        assert sparse.on_disk
        with pytest.raises(DrootError, match="^no room for a delta pull's tables in "):
            sparse.allocate(1 << 20, 2 << 20)
    finally:
        pool.close()


@pytest.mark.parametrize("memory_slots", [IndexTable.MEMORY_SLOTS, 0])
def test_a_table_finds_every_key_in_memory_or_in_a_file(tmp_path, monkeypatch, memory_slots):
    """Past MEMORY_SLOTS, a table's slots are in a scratch file, read and written a slot at
    a time; it grows there too."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(IndexTable, "MEMORY_SLOTS", memory_slots)
    monkeypatch.setattr(IndexTable, "SLOTS", 8)
    keys = [b"key %d" % n for n in range(3000)]
    pool = scratch.Scratch()
    table = IndexTable(lambda number, key: keys[number] == key, scratch=pool)
    try:
        for number, key in enumerate(keys):
            assert table.put(key, number) == -1
        assert table.put(keys[7], 9, replace=False) == 7
        assert [table.find(key) for key in keys] == list(range(3000))
        assert table.find(b"no such key") == -1
    finally:
        table.close()
        pool.close()
