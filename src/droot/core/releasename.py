"""The shape of a release and of the root symlink droot makes to it, shared by the deploy
stage (which makes them) and `droot umount` (which follows only that symlink)."""

import re

# ASCII digits and \Z: `\d` takes any script's digits, and `$` a trailing newline.
RELEASE_NAME = re.compile(r"^([0-9]{6,})-([0-9]{8}T[0-9]{6}\.[0-9]{6}Z)-([0-9a-f]{12})\Z")


def releases_dir_name(root_name: str) -> str:
    """The releases directory beside the root `root_name`: ROOT.releases."""
    return f"{root_name}.releases"


def release_of_link(root_name: str, target: str) -> str | None:
    """The release a root symlink called `root_name` points at, if its target `target` is
    exactly what deploy writes (`ROOT.releases/RELEASE`, relative); else None."""
    directory, _, release = target.partition("/")
    if directory == releases_dir_name(root_name) and RELEASE_NAME.match(release):
        return release
    return None
