"""A hostile delta manifest whose records do not hold one member each: the pull plans by
member, but rebuilds the stream by record, so a shift between the two would hand a file
bytes that no frame's digest was checked against."""

import os
from pathlib import Path

import pytest

from tests.conftest import droot
from tests.delta.hostile import (content, digest, directory, file, push_joined,  # noqa: F401
                                 push_members)


@pytest.mark.parametrize("options", [(), ("--read-only",)])
def test_two_members_in_one_record_are_refused(push_joined, push_members, tmp_path,
                                               options):
    """Record 1 holds the headers of `a` and `b` (same content, which the kept release
    holds: neither is in the stream): from there on, records and members are one apart.
    `c` (Y in the manifest) would then take the next headers as its data, unchecked, and
    the `.content` record would say it holds Y: the next, benign pull would reuse those
    bytes for its own `c` without reading them."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    x, y = content(b"X"), content(b"Y")
    padding = [directory(f"d{n}") for n in range(len(y) // 512)]  # c's "data"
    push_joined([file("a", x), file("b", x), file("c", y), *padding], store / "hostile",
                joined=b"b")
    push_members([file("a", x)], store / "base")
    push_members([file("c", y), file("other", content(b"o"))], store / "benign")
    assert droot("pull", store / "base", "--root", root, *options).returncode == 0
    result = droot("pull", store / "hostile", "--root", root, *options)
    release = Path(os.path.realpath(root))
    if result.returncode == 0:  # made: then every file holds what the manifest says
        assert (release / "c").read_bytes() == y, "c holds bytes no digest was checked on"
    else:
        assert result.stderr.count("\n") == 1 and "corrupt manifest" in result.stderr, \
            result.stderr
    result = droot("pull", store / "benign", "--root", root, *options)
    assert result.returncode == 0, result.stderr
    benign = Path(os.path.realpath(root))
    assert digest((benign / "c").read_bytes()) == digest(y), \
        "the benign release's c does not hold the content its manifest names"


def test_records_after_the_end_are_refused(push_members, monkeypatch, tmp_path):
    """A file's record after the end-of-archive marker: the extraction stops at the
    marker, and the stream had no download planned for it."""
    from droot.ship import delta
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    add, finish = delta._ManifestWriter.add, delta._ManifestWriter.finish
    added = []
    monkeypatch.setattr(delta._ManifestWriter, "add",
                        lambda self, header, content=None: (added.append((header, content)),
                                                            add(self, header, content)))

    def finish_with_more(self, head):
        add(self, *added[0])  # `a` again, after the end
        return finish(self, head)
    monkeypatch.setattr(delta._ManifestWriter, "finish", finish_with_more)
    push_members([file("a", content(b"A"))], store / "hostile")
    result = droot("pull", store / "hostile", "--root", root)
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith("corrupt manifest (records after the end of the "
                                  "archive)\n"), result.stderr
    assert not root.exists()


def test_a_head_that_overstates_its_records_costs_no_memory(push_members, monkeypatch,
                                                            tmp_path):
    """The head's record count sizes the shared plan, a mapping of which only the pages
    used become memory: a small manifest whose head says it has the most records a head
    may say must not make the pull allocate for all of them."""
    from droot.ship import delta
    from tests.conftest import droot_peak_rss_mb
    from tests.delta.test_delta_plan import with_head
    store = tmp_path / "store"
    store.mkdir()
    members = [file("a", content(b"A")), file("b", content(b"B"))]
    push_members(members, store / "honest")
    finish = delta._ManifestWriter.finish
    monkeypatch.setattr(delta._ManifestWriter, "finish", lambda self, head: with_head(
        finish(self, head), lambda head: head.update(records=delta._RECORDS_LIMIT)))
    push_members(members, store / "overstated")
    honest = droot_peak_rss_mb("pull", store / "honest", "--root", tmp_path / "one")
    overstated = droot_peak_rss_mb("pull", store / "overstated", "--root", tmp_path / "two")
    assert overstated - honest < 32, (honest, overstated)
