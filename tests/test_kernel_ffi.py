"""droot.core.kernel builds its few C types on `_ctypes`, ctypes' C core, to keep the
`ctypes` package off `droot run`'s start. These tests pin that choice: the types are the
public ones' twins, calls go through with errno, and the package really stays unloaded
(in-process, except the import check)."""

import ctypes
import errno
import os
import subprocess
import sys

import pytest

from droot.core import kernel


@pytest.mark.parametrize("ours, public", [
    (kernel.c_int, ctypes.c_int), (kernel.c_long, ctypes.c_long),
    (kernel.c_ulong, ctypes.c_ulong), (kernel.c_uint8, ctypes.c_uint8),
    (kernel.c_uint16, ctypes.c_uint16), (kernel.c_uint32, ctypes.c_uint32),
    (kernel.c_uint64, ctypes.c_uint64),
])
def test_each_type_is_the_public_types_twin(ours, public):
    assert kernel.sizeof(ours) == ctypes.sizeof(public)
    largest = (1 << (8 * ctypes.sizeof(public) - (public(-1).value < 0))) - 1
    assert ours(largest).value == public(largest).value == largest
    assert ours(largest + 1).value == public(largest + 1).value  # same wrap-around


def test_a_call_returns_the_c_result():
    assert kernel.syscall(39 if os.uname().machine == "x86_64" else 172) == os.getpid()


def test_a_failing_call_raises_oserror_with_its_errno(tmp_path):
    with pytest.raises(OSError) as failure:
        kernel.umount2(str(tmp_path))  # not a mount point
    assert failure.value.errno in (errno.EINVAL, errno.EPERM)
    with pytest.raises(OSError) as failure:
        kernel.setns(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))  # not a namespace
    assert failure.value.errno == errno.EINVAL


def test_the_ctypes_package_stays_unloaded():
    """The reason for `_ctypes`: if something imports `ctypes` anyway, the workaround
    buys nothing and should go."""
    code = "import sys, droot.core.kernel; print(sorted(m for m in sys.modules if m.startswith('ctypes')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


MAPPED_AFTER_A_LARGE_FREE = """
import ctypes, sys
from droot.core import kernel

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "mapped":
    kernel.map_large_allocations()
freed = bytearray(16 << 20)
del freed  # a large block freed: glibc would raise its threshold to its size
before = libc.mallinfo2().hblkhd
block = bytearray(4 << 20)
print(libc.mallinfo2().hblkhd - before >= 4 << 20)
"""


@pytest.mark.parametrize("mode, mapped", [("mapped", "True"), ("default", "False")])
def test_large_blocks_get_their_own_mapping_after_map_large_allocations(mode, mapped):
    """After a large block is freed, glibc serves the next ones from the heap, where they
    stay; map_large_allocations keeps them mapped on their own (the default's behaviour is
    checked too, so the test cannot pass without the call doing something)."""
    result = subprocess.run([sys.executable, "-c", MAPPED_AFTER_A_LARGE_FREE, mode],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == mapped
