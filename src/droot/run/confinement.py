"""Two kernel sandboxes on top of chroot and capabilities, both inherited by the app.

- Landlock: the app may create, change or remove files only beneath its root (which
  includes its bind mounts, /dev and /proc) and reopen its own stdin, stdout and stderr.
  A file outside reached through a /proc magic link stays read-only to it: the
  CVE-2019-5736 class, where a command whose interpreter is `/proc/self/exe` runs the
  host's Python and then reopens it for writing. Root owns that file, so no capability
  check would stop it; Landlock does, with no race. A Landlock-confined process can also
  neither mount nor ptrace outside its domain. Skipped on kernels without Landlock, and
  with `--no-dropcaps` (a privileged app is meant to do all that).
- seccomp: ioctl TIOCSTI (push input into a terminal, which the host's shell then runs)
  and TIOCLINUX fail with EPERM. This kernel allows TIOCSTI to anyone on their own
  terminal, and droot cannot start a new session without leaving the supervisor's.
"""

import os
import stat

from droot.run.kernel import (POINTER, Structure, addressof, byref, c_int32, c_uint8, c_uint16,
                              c_uint32, c_uint64, check, prctl, sizeof, syscall)

# Landlock (linux/landlock.h); the system call numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_WRITE_FILE = 1 << 1
_ABI1_WRITES = _WRITE_FILE | sum(1 << bit for bit in range(4, 13))  # remove_*, make_*
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3


class _RulesetAttr(Structure):
    _fields_ = [("handled_access_fs", c_uint64)]


class _PathBeneathAttr(Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", c_uint64), ("parent_fd", c_int32)]


def confine_writes_to_root() -> bool:
    """Allow writes only beneath `/` (the chroot) and to the files on fds 0-2. Returns
    False when the kernel has no Landlock."""
    abi = syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    if abi < 1:
        return False
    handled = _ABI1_WRITES | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(handled)
    ruleset = check(syscall(_CREATE_RULESET, byref(attr), sizeof(attr), 0), "Landlock")
    try:
        _allow(ruleset, "/", handled)
        for descriptor in (0, 1, 2):
            try:
                mode = os.fstat(descriptor).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) or stat.S_ISCHR(mode):
                _allow(ruleset, f"/proc/self/fd/{descriptor}", handled & (_WRITE_FILE | _TRUNCATE))
        check(syscall(_RESTRICT_SELF, ruleset, 0), "Landlock")
    finally:
        os.close(ruleset)
    return True


def _allow(ruleset: int, path: str, access: int) -> None:
    descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(access, descriptor)
        check(syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, byref(rule), 0), "Landlock")
    finally:
        os.close(descriptor)


# seccomp (linux/seccomp.h, linux/filter.h, linux/audit.h)
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LOAD_WORD, _JUMP_IF_EQUAL, _RETURN = 0x20, 0x15, 0x06
_ALLOW, _DENY = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
_NR, _ARCH, _ARG1_LOW = 0, 4, 24  # offsets in struct seccomp_data (little-endian)
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C
# audit architecture -> the numbers of ioctl(2) in it (x86_64 also for x32, and i386).
_IOCTL_NUMBERS = {
    "x86_64": {0xC000003E: (16, 0x40000000 | 514), 0x40000003: (54,)},
    "aarch64": {0xC00000B7: (29,), 0x40000028: (54,)},
}[os.uname().machine]


class _SockFilter(Structure):
    _fields_ = [("code", c_uint16), ("jt", c_uint8), ("jf", c_uint8), ("k", c_uint32)]


class _SockFprog(Structure):
    _fields_ = [("len", c_uint16), ("filter", POINTER(_SockFilter))]


def _terminal_injection_filter() -> list[tuple[int, int, int, int]]:
    """A classic BPF program: if the call is an ioctl of its architecture and the request
    (its low 32 bits, all the kernel reads) is TIOCSTI or TIOCLINUX, fail with EPERM;
    allow everything else. Laid out as: load arch, one test per architecture, allow;
    then per architecture: load nr, one test per ioctl number, allow; then the check."""
    arches = list(_IOCTL_NUMBERS.items())
    block_starts, position = [], 2 + len(arches)
    for _, numbers in arches:
        block_starts.append(position)
        position += len(numbers) + 2
    check = position
    program = [(_LOAD_WORD, 0, 0, _ARCH)]
    for (arch, _), start in zip(arches, block_starts):
        program.append((_JUMP_IF_EQUAL, start - len(program) - 1, 0, arch))
    program.append((_RETURN, 0, 0, _ALLOW))
    for _, numbers in arches:
        program.append((_LOAD_WORD, 0, 0, _NR))
        for number in numbers:
            program.append((_JUMP_IF_EQUAL, check - len(program) - 1, 0, number))
        program.append((_RETURN, 0, 0, _ALLOW))
    return program + [(_LOAD_WORD, 0, 0, _ARG1_LOW), (_JUMP_IF_EQUAL, 2, 0, _TIOCSTI),
                      (_JUMP_IF_EQUAL, 1, 0, _TIOCLINUX), (_RETURN, 0, 0, _ALLOW),
                      (_RETURN, 0, 0, _DENY)]


def block_terminal_injection() -> None:
    """Install the filter (needs no_new_privs or CAP_SYS_ADMIN: droot still has it)."""
    instructions = _terminal_injection_filter()
    filters = (_SockFilter * len(instructions))(*instructions)
    program = _SockFprog(len(instructions), filters)
    prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, addressof(program))
