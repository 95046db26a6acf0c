"""`droot export` options; the implementation is imported only when the command runs."""

import argparse
import os

COMPRESSIONS = ("gzip", "zstd", "none")


def export_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("image", metavar="IMAGE",
                        help="NAME[:TAG] or ID (Docker engine), docker-archive:PATH, "
                        "oci:PATH[:TAG] or docker://HOST[:PORT]/REPO[:TAG|@DIGEST]")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE (replaced only when the export succeeds) "
                        "instead of stdout")
    parser.add_argument("--compress", choices=COMPRESSIONS, default="none",
                        help="compress the stream (default: none, a plain tar)")
    plain_http_argument(parser)


def plain_http_argument(parser: argparse.ArgumentParser):
    """--plain-http, for export and push (the environment's DROOT_PLAIN_HTTP=1 too)."""
    parser.add_argument("--plain-http", "--insecure-registry", dest="plain_http",
                        action="store_true",
                        default=os.environ.get("DROOT_PLAIN_HTTP", "") not in ("", "0"),
                        help="docker://: talk to the registry over plain HTTP (automatic "
                        "for loopback addresses; also DROOT_PLAIN_HTTP=1)")


def export(args) -> int:
    from droot.image.output import run_export
    return run_export(args)
