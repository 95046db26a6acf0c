"""The `.content` record's index (droot.deploy.reuse._Record): a lookup by path finds
exactly the entry written for that path, whatever the paths (spaces, prefixes of each
other, many sharing a hash slot, longer than one read), and a malformed record is
refused whole."""

import contextlib
import hashlib
import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from droot.core.scratch import Scratch
from droot.deploy.reuse import _Record


def body(entries: dict) -> bytes:
    return b"".join(b"%s %d %d %d %s\0" % (hashlib.sha256(path).hexdigest().encode(), *numbers,
                                            path) for path, numbers in entries.items())


@contextlib.contextmanager
def record_of(entries: bytes):
    """A _Record of a file holding `entries` after a header line (its table on the disk,
    as a pull's)."""
    scratch = Scratch()
    with tempfile.TemporaryFile() as file, contextlib.closing(scratch):
        file.write(b"header\n" + entries)
        file.flush()
        fd = os.dup(file.fileno())
        try:
            record = _Record(fd, len(b"header\n"), scratch)
        except BaseException:
            os.close(fd)
            raise
        try:
            yield record
        finally:
            record.close()


paths = st.binary(min_size=1, max_size=40).filter(lambda path: b"\0" not in path)


@given(st.dictionaries(paths, st.tuples(*[st.integers(1, 2**62)] * 3), max_size=200),
       st.lists(paths, max_size=20))
def test_each_path_finds_its_own_entry_and_no_other(entries, others):
    with record_of(body(entries)) as record:
        for path, numbers in entries.items():
            assert record.get(path) == (hashlib.sha256(path).digest(), numbers)
        for path in others:
            if path not in entries:
                assert record.get(path) is None


def test_prefixes_spaces_long_paths_and_a_repeated_path():
    long = b"d/" * 2000 + b"f"
    with record_of(body({b"a": (1, 2, 3), b"a b": (4, 5, 6), b"a/b": (7, 8, 9), long: (1, 1, 1)})
                   + body({b"a": (10, 11, 12)})) as record:  # written twice: the last counts
        assert record.get(b"a")[1] == (10, 11, 12)
        assert record.get(b"a b")[1] == (4, 5, 6)
        assert record.get(b"a/b")[1] == (7, 8, 9)
        assert record.get(long)[1] == (1, 1, 1)
        assert record.get(long[:-1]) is None
        assert record.get(b"a/") is None and record.get(b"b") is None
        assert record.get(b"") is None
    with record_of(b"") as record:
        assert record.get(b"a") is None


@pytest.mark.parametrize("entry", [b"00 1 2 3 a\0", b"%s 1 2 a\0" % (b"0" * 64),
                                   b"%s x 2 3 a\0" % (b"0" * 64), b"%s 1 2 3 a\0" % (b"z" * 64),
                                   b"%s 1 2 3 a" % (b"0" * 64)])
def test_a_malformed_entry_refuses_the_record(entry):
    with pytest.raises(ValueError), record_of(body({b"b": (1, 2, 3)}) + entry):
        pass
