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
