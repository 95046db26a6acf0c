"""The `.content` record's index (droot.deploy.reuse._Record): a lookup by path finds
exactly the entry written for that path, whatever the paths (spaces, prefixes of each
other, many sharing a hash slot), and a malformed record is refused whole."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from droot.deploy.reuse import _Record


def body(entries: dict) -> bytes:
    return b"".join(b"%s %d %d %d %s\0" % (hashlib.sha256(path).hexdigest().encode(), *numbers,
                                            path) for path, numbers in entries.items())


paths = st.binary(min_size=1, max_size=40).filter(lambda path: b"\0" not in path)


@given(st.dictionaries(paths, st.tuples(*[st.integers(1, 2**62)] * 3), max_size=200),
       st.lists(paths, max_size=20))
def test_each_path_finds_its_own_entry_and_no_other(entries, others):
    record = _Record(body(entries))
    for path, numbers in entries.items():
        assert record.get(path) == (hashlib.sha256(path).digest(), numbers)
    for path in others:
        if path not in entries:
            assert record.get(path) is None


def test_prefixes_spaces_and_a_repeated_path():
    record = _Record(body({b"a": (1, 2, 3), b"a b": (4, 5, 6), b"a/b": (7, 8, 9)})
                     + body({b"a": (10, 11, 12)}))  # written twice: the last one counts
    assert record.get(b"a")[1] == (10, 11, 12)
    assert record.get(b"a b")[1] == (4, 5, 6)
    assert record.get(b"a/b")[1] == (7, 8, 9)
    assert record.get(b"a/") is None and record.get(b"b") is None and record.get(b"") is None
    assert _Record(b"").get(b"a") is None


@pytest.mark.parametrize("entry", [b"00 1 2 3 a\0", b"%s 1 2 a\0" % (b"0" * 64),
                                   b"%s x 2 3 a\0" % (b"0" * 64), b"%s 1 2 3 a" % (b"z" * 64)])
def test_a_malformed_entry_refuses_the_record(entry):
    with pytest.raises(ValueError):
        _Record(entry)
