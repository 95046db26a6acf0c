"""Room on the disk for a delta pull's manifest and tables of every member, so that its
memory does not grow with the image's number of files (issue 14: "< 100 MB whatever the
image's size").

A Region is a mapping (MAP_SHARED) of an unlinked temporary file in $TMPDIR, else
/var/tmp (a disk, where /tmp may be memory): read and written as memory, inherited by a
forked child as the same pages, gone with the process however it ends. Its pages are the
file's, in the page cache, which the kernel writes back and takes when memory is short;
but a page stays counted in the process (and kept) while it is mapped there, so
`Scratch.trim` unmaps every page of the larger regions now and then (MADV_DONTNEED: the
data stays in the file, and the next access maps the page again, a minor fault).
Regions of 1 MB or less (an image of some 10,000 files) are never trimmed: they cost
what they did in memory. Tables larger than memory should hold are read from their file
(droot.core.indextable).

Where no temporary file can be made there (a read-only or missing /var/tmp, or one
without room for a region's first blocks), a region is a memfd: the pull works as
before, in memory that grows with the number of files.
"""

import mmap
import os
import tempfile

from droot.core.errors import DrootError

TRIM_ABOVE = 1 << 20  # a region this large or smaller stays mapped
DEFAULT_DIRECTORY = "/var/tmp"


class Region:
    """`size` zero bytes as `map`, of the file `fd`. The file's blocks are allocated
    (fallocate) before they are written: as it is made or grown, or by allocate(). A full
    disk is then one error, not a SIGBUS at the first write into the mapping."""

    def __init__(self, size: int, allocated: int | None = None):
        """`allocated`: how many of its first bytes have their blocks allocated now (all
        of them if None); allocate() others before they are written."""
        size = max(size, mmap.PAGESIZE)
        self.fd, self.on_disk = _scratch_file(size, size if allocated is None
                                              else min(allocated, size))
        try:
            # Read at random, a few bytes at a time: with readahead, the page cache would
            # hold them in large folios (tens of pages), and a fault maps a whole folio.
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
            self.map = mmap.mmap(self.fd, size)
            self.map.madvise(mmap.MADV_RANDOM)
        except BaseException:
            os.close(self.fd)
            raise

    def __len__(self) -> int:
        return len(self.map)

    def grow(self, size: int):
        """At least `size` bytes (the new ones zeros). Only the process that grows a
        region sees it grown in its mapping: another reads past its own with read()."""
        if size > len(self.map):
            new = max(size, 2 * len(self.map))
            self.allocate(0, new)
            self.map.resize(new)

    def allocate(self, offset: int, length: int):
        """Allocate the blocks of `length` bytes from `offset` (see the class)."""
        if self.on_disk and length > 0:
            try:
                os.posix_fallocate(self.fd, offset, length)
            except OSError as error:
                raise DrootError(f"no room for a delta pull's tables in {directory()} "
                                 f"({error.strerror}): set TMPDIR to a directory with "
                                 "room") from None

    def read(self, size: int, offset: int) -> bytes:
        """Bytes of the region, read from the file (see grow)."""
        return os.pread(self.fd, size, offset)

    def trim(self):
        if self.fd >= 0 and len(self.map) > TRIM_ABOVE:
            self.map.madvise(mmap.MADV_DONTNEED)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            try:
                self.map.close()
            except BufferError:  # a table still viewing it (a plan left mid-way by an
                pass             # error): unmapped when that view goes


def directory() -> str:
    """Where scratch files are made."""
    return os.environ.get("TMPDIR") or DEFAULT_DIRECTORY


def _scratch_file(size: int, allocated: int) -> tuple[int, bool]:
    """(descriptor, whether on the disk) of a new file of `size` zero bytes, the blocks of
    the first `allocated` allocated."""
    try:
        with tempfile.TemporaryFile(dir=directory(), buffering=0) as file:
            fd = os.dup(file.fileno())  # close-on-exec, as Python makes them
    except OSError:
        pass
    else:
        try:
            if allocated:
                os.posix_fallocate(fd, 0, allocated)
            if size > allocated:
                os.ftruncate(fd, size)
            return fd, True
        except OSError:
            os.close(fd)
    fd = os.memfd_create("droot-scratch", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd, False


def spool():
    """A new empty file there (or a memfd), for data read back by position."""
    return open(_scratch_file(0, 0)[0], "w+b", buffering=0)


class Scratch:
    """The regions of one pull, trimmed together: every TRIM_EVERY members planned or
    extracted, each of which maps a few pages of a region (a read fault maps up to 16
    cached pages around it: the kernel's fault-around)."""

    TRIM_EVERY = 64  # a read of a page maps 16: at most 4 MB a region between trims

    def __init__(self):
        self._regions: list[Region] = []

    def region(self, size: int, allocated: int | None = None) -> Region:
        region = Region(size, allocated)
        self._regions = [kept for kept in self._regions if kept.fd >= 0]
        self._regions.append(region)
        return region

    def trim(self):
        for region in self._regions:
            region.trim()

    def close(self):
        for region in self._regions:
            region.close()
        self._regions = []
