"""The original droot's short flags parse to exactly what the long forms give (in-process:
the parsers alone, no command runs)."""

import pytest

from droot.cli import build_parser
from droot.run.cli import parse_run_quickly


def parsed(argv: list[str]) -> dict:
    command = next(arg for arg in argv if not arg.startswith("-"))
    values = vars(build_parser(command).parse_args(argv))
    values.pop("handler")
    return values


@pytest.mark.parametrize("original, ours", [
    ("push -t s3://b/app.tar.gz img", "push --to s3://b/app.tar.gz img"),
    ("pull -s s3://b/app.tar.gz -d /srv/app -m rsync",
     "pull --src s3://b/app.tar.gz --root /srv/app --mode rsync"),
    ("deploy -r /srv/app -m rsync", "deploy --root /srv/app --mode rsync"),
    ("rm -r /srv/app", "rm --root /srv/app"),
    ("umount -r /srv/app", "umount --root /srv/app"),
    ("-D run -r /srv/app -cp -- /app", "--debug run --root /srv/app --copy-files -- /app"),
    ("run -D -r /srv/app -- /app", "run --debug --root /srv/app -- /app"),
])
def test_short_flag_means_the_long_one(original, ours):
    short, long = parsed(original.split()), parsed(ours.split())
    assert short == long
    # and the value landed where the command reads it, not in a positional argument
    assert "/srv/app" in short.values() or "s3://b/app.tar.gz" in short.values()


def test_quick_run_parser_reads_the_original_flags_as_argparse_does():
    argv = "-D run -r /srv/app -cp -e A=1 -- /app x".split()
    quick = vars(parse_run_quickly(argv))
    slow = parsed(argv)
    quick.pop("handler"), slow.pop("app_argv")
    assert quick.pop("app_argv") == ["--", "/app", "x"]
    assert quick == slow
    assert quick["root"] == "/srv/app" and quick["copy_files"] and quick["debug"]
