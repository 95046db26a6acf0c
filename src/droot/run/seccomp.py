"""The seccomp filter of `droot run`: the kernel's riskiest calls fail with EPERM.

The list covers what Docker's default profile denies for these classes, each a way past
the chroot or into rarely audited kernel code:

- file handles (`open_by_handle_at`, `name_to_handle_at`): open any inode of a shared
  filesystem, the "Shocker" escape; allowed with `--cap-add DAC_READ_SEARCH`;
- kernel keyrings (`keyctl`, `add_key`, `request_key`): not namespaced, so the host's
  keys; io_uring, `userfaultfd`, `perf_event_open`, `bpf`: large kernel attack surface;
- mounts and namespaces (`mount`, the new mount API, `unshare`, `setns`, `clone` with a
  namespace flag): a new user namespace hands out every capability inside it; `clone3`
  fails with ENOSYS, as in Docker, so the C library falls back to `clone`, whose flags
  the filter can read;
- the host itself: modules, kexec, reboot, swap, accounting, clocks, port I/O, syslog;
- `ioctl` TIOCSTI and TIOCLINUX on any terminal: input pushed into a terminal is run by
  the host's shell once the app exits (this kernel allows it on one's own terminal).
  (A process the app leaves behind on the operator's terminal can still make itself the
  terminal's foreground with tcsetpgrp, which shells need for job control: docs/run.md
  says to run untrusted apps without a terminal.)

A call whose capability the app keeps (`--cap-add SYS_ADMIN`, `SYS_TIME`, ...) is allowed,
as in Docker; `--allow-syscall NAME` allows one call, `--allow-syscall ALL` the whole list
(the terminal rule stays: no app needs it). Calls of another architecture than the
native one (and i386 on x86_64) kill the process: their numbers mean other calls.

The program is a few hundred classic-BPF instructions made from the tables below in
about 0.1 ms: no compiler, no library, nothing read from disk.
"""

import os

from droot.core.errors import RunError
from droot.core.kernel import POINTER, Structure, addressof, c_uint8, c_uint16, c_uint32, prctl

# name -> (x86_64, i386, aarch64) numbers; None where the architecture lacks the call.
# Then the capability whose holder may make the call anyway ("" for none).
DENIED = {
    "open_by_handle_at": ((304, 342, 265), "DAC_READ_SEARCH"),
    "name_to_handle_at": ((303, 341, 264), "DAC_READ_SEARCH"),
    "keyctl": ((250, 288, 219), ""),
    "add_key": ((248, 286, 217), ""),
    "request_key": ((249, 287, 218), ""),
    "io_uring_setup": ((425, 425, 425), ""),
    "io_uring_enter": ((426, 426, 426), ""),
    "io_uring_register": ((427, 427, 427), ""),
    "userfaultfd": ((323, 374, 282), "SYS_PTRACE"),
    "perf_event_open": ((298, 336, 241), "PERFMON"),
    "bpf": ((321, 357, 280), "BPF"),
    "mount": ((165, 21, 40), "SYS_ADMIN"),
    "umount2": ((166, 52, 39), "SYS_ADMIN"),
    "umount": ((None, 22, None), "SYS_ADMIN"),
    "pivot_root": ((155, 217, 41), "SYS_ADMIN"),
    "open_tree": ((428, 428, 428), "SYS_ADMIN"),
    "move_mount": ((429, 429, 429), "SYS_ADMIN"),
    "fsopen": ((430, 430, 430), "SYS_ADMIN"),
    "fsconfig": ((431, 431, 431), "SYS_ADMIN"),
    "fsmount": ((432, 432, 432), "SYS_ADMIN"),
    "fspick": ((433, 433, 433), "SYS_ADMIN"),
    "mount_setattr": ((442, 442, 442), "SYS_ADMIN"),
    "open_tree_attr": ((467, 467, 467), "SYS_ADMIN"),
    "unshare": ((272, 310, 97), "SYS_ADMIN"),
    "setns": ((308, 346, 268), "SYS_ADMIN"),
    "quotactl": ((179, 131, 60), "SYS_ADMIN"),
    "quotactl_fd": ((443, 443, 443), "SYS_ADMIN"),
    "lookup_dcookie": ((212, 253, 18), "SYS_ADMIN"),
    "fanotify_init": ((300, 338, 262), "SYS_ADMIN"),
    "swapon": ((167, 87, 224), "SYS_ADMIN"),
    "swapoff": ((168, 115, 225), "SYS_ADMIN"),
    "init_module": ((175, 128, 105), "SYS_MODULE"),
    "finit_module": ((313, 350, 273), "SYS_MODULE"),
    "delete_module": ((176, 129, 106), "SYS_MODULE"),
    "kexec_load": ((246, 283, 104), "SYS_BOOT"),
    "kexec_file_load": ((320, None, 294), "SYS_BOOT"),
    "reboot": ((169, 88, 142), "SYS_BOOT"),
    "acct": ((163, 51, 89), "SYS_PACCT"),
    "settimeofday": ((164, 79, 170), "SYS_TIME"),
    "stime": ((None, 25, None), "SYS_TIME"),
    "clock_settime": ((227, 264, 112), "SYS_TIME"),
    "clock_settime64": ((None, 404, None), "SYS_TIME"),
    "clock_adjtime": ((305, 343, 266), "SYS_TIME"),
    "clock_adjtime64": ((None, 405, None), "SYS_TIME"),
    "iopl": ((172, 110, None), "SYS_RAWIO"),
    "ioperm": ((173, 101, None), "SYS_RAWIO"),
    "syslog": ((103, 103, 116), "SYSLOG"),
    "uselib": ((134, 86, None), ""),
    "nfsservctl": ((180, 169, 42), ""),
    "vm86": ((None, 166, None), ""),
    "vm86old": ((None, 113, None), ""),
}
# Checked by their arguments, or answered with ENOSYS: (x86_64, i386, aarch64).
_CLONE, _CLONE3, _IOCTL = (56, 120, 220), (435, 435, 435), (16, 54, 29)
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C

# audit architectures -> index in the number tuples, per machine
_ARCHITECTURES = {
    "x86_64": ((0xC000003E, 0), (0x40000003, 1)),
    "aarch64": ((0xC00000B7, 2),),
}
_X32_BIT = 0x40000000  # x32 calls on x86_64: the same numbers with this bit

# classic BPF (linux/filter.h, linux/seccomp.h)
_LOAD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_EPERM, _ENOSYS = 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ERRNO | errno
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (little-endian)
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


def checked_allowances(names: list[str]) -> set[str]:
    """`--allow-syscall` values, validated before anything is made; on a machine whose
    system call numbers droot does not know, only ALL (no deny list) is possible."""
    machine = os.uname().machine
    if machine not in _ARCHITECTURES and "ALL" not in names:
        raise RunError(f"droot's seccomp filter knows no system call numbers for {machine} "
                       "(x86_64 and aarch64): run with --allow-syscall ALL to go without it")
    allowed = set()
    for name in names:
        if name != "ALL" and name not in DENIED and name != "clone3":
            raise RunError(f"--allow-syscall {name!r}: droot does not deny that call (it "
                           f"denies {', '.join(sorted(DENIED))} and clone3), or give ALL")
        allowed.add(name)
    return allowed


def program(kept: set[str] | None, allowed: set[str]) -> list[tuple[int, int, int, int]]:
    """The filter for an app that keeps the capabilities named `kept` (None: every one,
    so only the terminal rule) with the `allowed` calls let through."""
    machine = os.uname().machine
    if kept is None or "ALL" in allowed:
        denied = []
    else:
        denied = [name for name, (_, capability) in DENIED.items()
                  if name not in allowed and capability not in kept]
    namespaces_denied = kept is not None and "SYS_ADMIN" not in kept and "ALL" not in allowed
    instructions = [(_LOAD, 0, 0, _ARCH)]
    for audit_arch, index in _ARCHITECTURES[machine]:
        block = _architecture_block(machine, index, denied, namespaces_denied,
                                    namespaces_denied and "clone3" not in allowed)
        assert len(block) < 256, "an architecture's block must fit a BPF jump"
        instructions.append((_JEQ, 0, len(block), audit_arch))
        instructions += block
    return instructions + [(_RET, 0, 0, _KILL_PROCESS)]


def _architecture_block(machine: str, index: int, denied: list[str], check_clone: bool,
                        deny_clone3: bool) -> list[tuple[int, int, int, int]]:
    """The instructions for one architecture: load the call's number, then one test and
    one return per rule (every jump is short, so any list fits BPF's 8-bit offsets)."""
    block = [(_LOAD, 0, 0, _NR)]
    if machine == "x86_64" and index == 0:
        block += [(_JGE, 0, 1, _X32_BIT), (_RET, 0, 0, _KILL_PROCESS)]
    checks = [(_IOCTL[index], [(_LOAD, 0, 0, _ARG1), (_JEQ, 2, 0, _TIOCSTI),
                               (_JEQ, 1, 0, _TIOCLINUX), (_RET, 0, 0, _ALLOW),
                               (_RET, 0, 0, _EPERM)])]
    if check_clone:
        checks.append((_CLONE[index], [(_LOAD, 0, 0, _ARG0), (_JSET, 1, 0, _NAMESPACE_FLAGS),
                                       (_RET, 0, 0, _ALLOW), (_RET, 0, 0, _EPERM)]))
    if deny_clone3:
        checks.append((_CLONE3[index], [(_RET, 0, 0, _ENOSYS)]))
    for number, instructions in checks:
        block += [(_JEQ, 0, len(instructions), number), *instructions]
    for name in denied:
        number = DENIED[name][0][index]
        if number is not None:
            block += [(_JEQ, 0, 1, number), (_RET, 0, 0, _EPERM)]
    return block + [(_RET, 0, 0, _ALLOW)]


class _SockFilter(Structure):
    _fields_ = [("code", c_uint16), ("jt", c_uint8), ("jf", c_uint8), ("k", c_uint32)]


class _SockFprog(Structure):
    _fields_ = [("len", c_uint16), ("filter", POINTER(_SockFilter))]


def install(kept: set[str] | None, allowed: set[str]) -> None:
    """Install the filter on this process and what it execs (needs no_new_privs or
    CAP_SYS_ADMIN: droot still has the latter)."""
    if os.uname().machine not in _ARCHITECTURES:
        return  # no numbers for this machine: `run` refuses it earlier without ALL
    instructions = program(kept, allowed)
    filters = (_SockFilter * len(instructions))(*instructions)
    fprog = _SockFprog(len(instructions), filters)  # both kept alive until the call returns
    prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, addressof(fprog))
