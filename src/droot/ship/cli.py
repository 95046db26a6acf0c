"""Command line of the ship stage: push and pull (argparse only here)."""

import argparse
import sys

from droot.core.errors import UsageError
from droot.image.cli import plain_http_argument
from droot.ship import retry


def push_arguments(parser):
    parser.add_argument("image", metavar="IMAGE",
                        help="NAME[:TAG] or ID (Docker engine), docker-archive:PATH, "
                        "oci:PATH[:TAG] or docker://HOST/REPO[:TAG]")
    parser.add_argument("dest", metavar="DEST", nargs="?",
                        help="s3://BUCKET/KEY, a path or file:// URL, or - for stdout")
    parser.add_argument("-t", "--to", dest="to", metavar="DEST", help=argparse.SUPPRESS)
    parser.add_argument("--compress", choices=("gzip", "zstd", "none"), default="gzip",
                        help="archive compression (default gzip)")
    parser.add_argument("--zstd", dest="compress", action="store_const", const="zstd",
                        help="same as --compress zstd")
    parser.add_argument("--sign", metavar="KEY",
                        help="sign the release with this OpenSSH private key (or a public "
                        "key held by ssh-agent): DEST.sha256.sig")
    parser.add_argument("--delta", action="store_true", help="push a delta release: a "
                        "manifest at DEST, beside it only the contents the store lacks")
    plain_http_argument(parser)


def push(args) -> int:
    from droot.ship import transfer
    dest = args.dest or getattr(args, "to", None)
    if not dest:
        raise UsageError("push: give a destination: droot push IMAGE s3://BUCKET/KEY "
                         "(or a path, or - for stdout)")
    check_image_source(args.image)
    if args.delta:
        return _push_delta(args, dest)
    result = transfer.push(args.image, dest, compression=args.compress,
                           plain_http=args.plain_http, sign_key=args.sign)
    signed = f", signed by {result['signer']}" if result["signer"] else ""
    print(f"droot: pushed {args.image} to {dest} ({result['size']} bytes, "
          f"{result['compression']}, sha256 {result['sha256']}{signed})", file=sys.stderr)
    return 0


def _push_delta(args, dest: str) -> int:
    from droot.ship import delta
    result = delta.push(args.image, dest, plain_http=args.plain_http, sign_key=args.sign)
    signed = f", signed by {result['signer']}" if result["signer"] else ""
    print(f"droot: pushed {args.image} to {dest} as a delta release: {result['new_files']} "
          f"of {result['files']} files new ({result['new_bytes']} of {result['bytes']} bytes, "
          f"{result['uploaded']} compressed), manifest {result['size']} bytes, "
          f"sha256 {result['sha256']}{signed}", file=sys.stderr)
    return 0


def check_image_source(source: str):
    """Refuse a malformed registry reference before the upload to the store begins."""
    from droot.image.export import source_kind
    kind, reference = source_kind(source)
    if kind == "registry":
        from droot.image.registry import parse_reference
        parse_reference(reference)


def pull_arguments(parser):
    from droot.deploy.cli import sha256_value, target_arguments, trust_arguments
    parser.add_argument("src", metavar="SRC", nargs="?",
                        help="s3://BUCKET/KEY, http(s)://URL (e.g. presigned), a path, "
                        "file://PATH, or - for stdin")
    parser.add_argument("-s", "--src", dest="src_option", metavar="SRC", help=argparse.SUPPRESS)
    target_arguments(parser)
    parser.add_argument("--sha256", type=sha256_value, metavar="HEX",
                        help="the archive's expected SHA-256 (default: the store's checksum)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="deploy even when no checksum is found (not recommended)")
    trust_arguments(parser)
    parser.add_argument("--if-changed", action="store_true",
                        help="first compare the store's checksum (one small request) with "
                        "the current release's, and do nothing if they are the same, or if "
                        "it is a release that --check rolled back here")
    parser.add_argument("--retries", type=_retries, default=retry.DEFAULT_RETRIES,
                        metavar="N",
                        help="try the whole pull again up to N times after a failure of the "
                        "network or the store (connection refused or reset, timeout, 5xx, a "
                        f"download cut short), waiting about 1, 2, 4... s (default "
                        f"{retry.DEFAULT_RETRIES}, at most {retry.MAX_RETRIES}; 0: never)")
    parser.add_argument("--timeout", type=_timeout, default=60.0, metavar="SECONDS",
                        help="an attempt fails when the store sends nothing for SECONDS "
                        "(default 60)")


def _retries(value: str) -> int:
    if not value.isdigit() or int(value) > retry.MAX_RETRIES:
        raise UsageError(f"--retries {value!r}: expected a number from 0 to {retry.MAX_RETRIES}")
    return int(value)


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"--timeout {value!r}: expected a number of seconds above 0")
    return seconds


def pull(args) -> int:
    from droot.deploy.cli import report, restart_check_options, trusted_keys
    from droot.ship import stores, transfer
    from droot.ship.stores import redact
    src = args.src or args.src_option
    if not src:
        raise UsageError("pull: give a source: droot pull s3://BUCKET/KEY --root DIR")
    if not args.root:
        raise UsageError("pull: give the target directory: --root DIR")
    keys = trusted_keys(args)
    restart_check = restart_check_options(args)
    stores.TIMEOUT = args.timeout
    summary = retry.retrying(lambda: transfer.pull(
        src, args.root, expected_sha256=args.sha256, verify=args.verify, trusted_keys=keys,
        signature_file=args.signature, pushed=args.pushed,
        allow_downgrade=args.allow_downgrade, if_changed=args.if_changed, mode=args.mode,
        keep=args.keep, devices=args.devices, lock_timeout=args.lock_timeout,
        restart_check=restart_check, read_only=args.read_only), args.retries)
    if summary.get("unchanged"):
        # Quiet under a timer (stderr is the journal): a poll that finds nothing to do
        # every minute is not news. Exit status 0 either way.
        if sys.stderr.isatty():
            now = summary["release"] or args.root
            print(f"droot: unchanged: {now} (sha256 {summary['sha256'][:12]}) is what "
                  f"{redact(src)} holds", file=sys.stderr)
        return 0
    if summary.get("rolled_back"):
        # Every poll, in the journal: the host is not on the store's release. Yet 0: the
        # rollback already failed its own run (status 3, or 4 when the previous release
        # failed too), and deploying the same release again would only restart the app.
        failed_too = (", and the previous release failed its restart or check too: look "
                      "at the app" if summary.get("recovered") is False else "")
        print(f"droot: not deploying {redact(src)}: its release (sha256 "
              f"{summary['sha256'][:12]}) was rolled back here at "
              f"{summary.get('rolled_back_at', '?')} (release {summary.get('release')})"
              f"{failed_too}; to try it again, pull without --if-changed (success clears "
              "this)", file=sys.stderr)
        return 0
    report(summary, args.root)
    return 0


def gc_arguments(parser):
    from droot.ship.deltagc import DEFAULT_GRACE, DEFAULT_KEEP
    parser.add_argument("store", metavar="STORE",
                        help="the delta store: s3://BUCKET[/PREFIX] or a directory (where "
                        "the releases pushed with --delta are)")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, metavar="N",
                        help=f"delta releases to keep, newest first (default {DEFAULT_KEEP})")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                        help="delete nothing younger than this: longer than the longest push "
                        f"(default {DEFAULT_GRACE}, a day)")


def gc(args) -> int:
    from droot.ship import deltagc
    deltagc.report(deltagc.gc(args.store, keep=args.keep, grace=args.grace), args.store)
    return 0
