"""Command line of the deploy stage: deploy, rollback, releases, rm (argparse only here;
the implementation is imported when a command runs)."""

import sys

from droot.core.errors import DrootError, UsageError


def _non_negative(convert, flag: str, expected: str):
    """An argparse type: `convert` of the value, refused with one line when not >= 0."""
    def parse(value: str):
        try:
            number = convert(value)
        except ValueError:
            number = -1
        if number < 0:
            raise UsageError(f"{flag} {value!r}: expected {expected}")
        return number
    return parse


_keep = _non_negative(int, "--keep", "a number of releases (0 keeps all)")
_seconds = _non_negative(float, "--lock-timeout", "seconds (0 fails at once)")
_check_seconds = _non_negative(float, "--check-timeout", "seconds")


def _restart_value(value: str):
    from droot.deploy.restart import parse_restart
    return parse_restart(value)


def sha256_value(value: str) -> str:
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(f"--sha256 {value!r}: expected 64 hexadecimal digits")
    return value


def root_arguments(parser, *, required=True):
    parser.add_argument("-r", "--root", "-d", "--dest", dest="root", metavar="DIR",
                        required=required,
                        help="the app's directory (a symlink to its current release)")
    parser.add_argument("--lock-timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="fail if another deploy holds DIR longer (default: wait)")


def target_arguments(parser):
    """The options shared by `deploy` and `pull`."""
    from_pull = parser.prog.endswith("pull")
    root_arguments(parser, required=not from_pull)
    parser.add_argument("-m", "--mode", choices=("symlink", "rsync"), default="symlink",
                        help="symlink: a new release directory and an atomic switch "
                        "(default); rsync: sync into DIR in place (not atomic)")
    parser.add_argument("--keep", type=_keep, default=5, metavar="N",
                        help="releases to keep, newest first (default 5; 0 keeps all); the "
                        "current and previous ones and those in use are always kept")
    parser.add_argument("--devices", action="store_true",
                        help="create the device nodes found in the archive (by default they "
                        "are skipped: a node in a release is usable by anyone who reaches it "
                        "on the host, a disk's too)")
    parser.add_argument("--no-devices", dest="devices", action="store_false",
                        help="skip device nodes: the default, kept for older command lines")
    parser.add_argument("--read-only", action="store_true",
                        help="make a release no app can change: droot run mounts it "
                        "read-only (give writable places with --tmpfs or -b), and the next "
                        "delta pull hard-links its unchanged files instead of copying them")
    parser.add_argument("--restart", type=_restart_value, metavar="UNIT|pidfile:PATH[:SIGNAL]",
                        help="after the switch, restart the app: systemctl restart UNIT, or "
                        "send SIGNAL (default HUP) to the supervisor whose pid PATH holds; if "
                        "it fails (or --check does), roll back and restart again")
    parser.add_argument("--check", metavar="CMD",
                        help="after the switch (and restart), run CMD (sh -c, on the host) "
                        "until it exits 0; if it never does within --check-timeout, roll back "
                        "to the previous release (and restart it)")
    parser.add_argument("--check-timeout", type=_check_seconds, metavar="SECONDS",
                        help="how long the restart and the check may each take (default 30)")


def restart_check_options(args):
    """What `--restart`, `--check` and `--check-timeout` ask for, or None."""
    if args.restart is None and args.check is None:
        if args.check_timeout is not None:
            raise UsageError("--check-timeout needs --check or --restart")
        return None
    if args.check is not None and not args.check.strip():
        raise UsageError("--check is empty: give a command that exits 0 when the app is healthy")
    from droot.deploy.restart import DEFAULT_CHECK_TIMEOUT, RestartCheck
    timeout = DEFAULT_CHECK_TIMEOUT if args.check_timeout is None else args.check_timeout
    return RestartCheck(args.restart, args.check, timeout)


def deploy_arguments(parser):
    target_arguments(parser)
    parser.add_argument("--sha256", type=sha256_value, metavar="HEX",
                        help="refuse the archive unless its SHA-256 (as received) is HEX")
    trust_arguments(parser)
    parser.add_argument("--name", metavar="NAME",
                        help="with --trusted-keys: the archive's name as pushed (the last "
                        "part of its key, e.g. app.tar.gz), which its signature covers")


def trust_arguments(parser):
    """The signature options shared by `deploy` and `pull`."""
    parser.add_argument("--trusted-keys", metavar="FILE",
                        help="deploy only a release signed by one of these public keys "
                        "(one a line, as in authorized_keys; see droot push --sign)")
    parser.add_argument("--signature", metavar="FILE",
                        help="the release's signature (SRC.sha256.sig), when it is not "
                        "beside the archive (stdin, a presigned URL)")
    parser.add_argument("--pushed", type=_push_time, metavar="NS",
                        help="with --signature: the push time it covers, the number on the "
                        "'# droot-pushed' line of the release's sidecar (SRC.sha256)")
    parser.add_argument("--allow-downgrade", action="store_true",
                        help="with --trusted-keys: accept a release pushed before the newest "
                        "one accepted here, or signed without a push time (going back on "
                        "purpose)")


def _push_time(value: str) -> int:
    from droot.core.signatures import parse_push_time
    pushed = parse_push_time(value)
    if pushed is None:
        raise UsageError(f"--pushed {value!r}: expected the push time in nanoseconds, as "
                         "on the sidecar's '# droot-pushed' line")
    return pushed


def trusted_keys(args):
    """The --trusted-keys of the command line, read and checked; None without it."""
    if not args.trusted_keys:
        for flag, given in (("--signature", args.signature), ("--pushed", args.pushed),
                            ("--allow-downgrade", args.allow_downgrade)):
            if given:
                raise UsageError(f"{flag} goes with --trusted-keys FILE: give it too")
        return None
    if args.pushed is not None and not args.signature:
        raise UsageError("--pushed goes with --signature FILE (otherwise the push time is "
                         "read from the sidecar beside the archive)")
    from droot.core.signatures import TrustedKeys
    return TrustedKeys(args.trusted_keys)


def report(summary: dict, root) -> None:
    pruned = summary.get("pruned") or []
    extra = f", pruned {len(pruned)} old release(s)" if pruned else ""
    skipped = summary.get("skipped_devices")
    if skipped:
        extra += f", skipped {skipped} device node(s) (--devices creates them)"
    if summary.get("signer"):
        extra += f", signed by {summary['signer']}"
    if summary.get("verified"):
        extra += f", {summary['verified']}"
    print(f"droot: deployed {summary['release']} at {root} ({summary['files']} files, "
          f"{summary['compression']}, sha256 {summary['sha256'][:12]}){extra}", file=sys.stderr)


def deploy(args) -> int:
    from droot.deploy import deploy as implementation
    if sys.stdin is None:
        raise DrootError("deploy reads the archive on stdin, which is closed: pipe one in, "
                         "or use 'droot pull SRC --root DIR'")
    if sys.stdin.isatty():
        raise DrootError("deploy reads the archive on stdin, which is a terminal: "
                         "pipe it in, e.g. aws s3 cp s3://bucket/app.tar.gz - | droot deploy "
                         f"--root {args.root}")
    keys = trusted_keys(args)
    signer = _verify_stdin_release(keys, args) if keys else None
    restart_check = restart_check_options(args)
    # The descriptor, not a stream: the extraction child reads it itself (pipeline.py).
    summary = implementation.deploy(sys.stdin.fileno(), args.root, mode=args.mode,
                                    keep=args.keep, expected_sha256=args.sha256,
                                    devices=args.devices, lock_timeout=args.lock_timeout,
                                    source="-", signer=signer, pushed=args.pushed,
                                    allow_downgrade=args.allow_downgrade,
                                    restart_check=restart_check, read_only=args.read_only)
    report(summary, args.root)
    return 0


def _verify_stdin_release(keys, args) -> str:
    """The signer of the release on stdin, checked before a byte of it is read: its
    signature covers --sha256, --name and --pushed, and the extraction then checks the
    SHA-256 (and the deploy the push time)."""
    from droot.core.signatures import read_signature_file
    if not (args.signature and args.sha256 and args.name):
        raise UsageError("deploy --trusted-keys needs the release's --signature FILE, "
                         "--sha256 HEX, --name NAME and --pushed NS (pull finds them in "
                         "the store)")
    if args.pushed is None and not args.allow_downgrade:
        raise UsageError("deploy --trusted-keys needs the release's --pushed NS too (the "
                         "'# droot-pushed' line of its sidecar), or --allow-downgrade for a "
                         "release signed without one")
    return keys.verify(read_signature_file(args.signature), args.sha256, args.name,
                       args.pushed, args.signature)


def rollback_arguments(parser):
    root_arguments(parser)
    parser.add_argument("--to", metavar="RELEASE",
                        help="the release to switch to (a name or its unique start; "
                        "default: the one deployed before the current one)")


def rollback(args) -> int:
    from droot.deploy import deploy as implementation
    previous, current = implementation.rollback(args.root, to=args.to,
                                                lock_timeout=args.lock_timeout)
    print(f"droot: {args.root} now points at {current} (was {previous})", file=sys.stderr)
    return 0


def releases_arguments(parser):
    parser.add_argument("-r", "--root", "-d", "--dest", dest="root", metavar="DIR",
                        required=True, help="the app's directory")


def releases(args) -> int:
    from droot.core import readonly
    from droot.deploy.releases import Layout
    layout = Layout(args.root)
    current = layout.current()
    found = layout.releases(everything=True)  # refuses a symlinked ROOT.releases
    state = layout.state()
    if state == "foreign":
        raise DrootError(f"{layout.root} is {_describe(layout.root)}, not an app deployed by "
                         "droot (a release symlink, or a directory in rsync mode)")
    if state == "directory" and not _has_releases_dir(layout):
        raise DrootError(f"{layout.root} was not deployed by droot (no {layout.releases_dir})")
    if not found and state == "absent":
        raise DrootError(f"{layout.root} has no releases (not deployed yet?)")
    for release in found:
        if not release.directory:  # never made by droot: rollback and rm refuse it
            print(f"! {release.name} (not a directory: not a release droot made)")
            continue
        mark = "*" if release.name == current else " "
        note = " (read-only)" if readonly.is_marked(release.path) else ""
        print(f"{mark} {release.name}{note}")
    if state == "directory":
        print(f"* {layout.root} (a real directory: rsync mode)")
    return 0


def _has_releases_dir(layout) -> bool:
    return layout.through_releases(lambda releases_fd: True, False)


def _describe(path) -> str:
    """What a path that is neither absent nor a directory nor our symlink is."""
    import os
    import stat
    if os.path.islink(path):
        target = os.readlink(path)
        return f"a symlink to {target}" + ("" if os.path.exists(path) else " (which is missing)")
    mode = os.lstat(path).st_mode
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def rm_arguments(parser):
    root_arguments(parser)


def rm(args) -> int:
    from droot.deploy import deploy as implementation
    removed = implementation.remove_all(args.root, lock_timeout=args.lock_timeout)
    print(f"droot: removed {args.root} and {len(removed)} release(s)", file=sys.stderr)
    return 0
