"""Release names (droot.core.releasename): the shape deploy gives a release, and the one
root symlink `droot umount` agrees to follow."""

import pytest

from droot.core.releasename import RELEASE_NAME, release_of_link, releases_dir_name

NAME = "000042-20240102T030405.060708Z-0123456789ab"


def test_the_name_deploy_makes_has_the_shape():
    """What droot.deploy.releases makes: SEQUENCE-UTC TIME-DIGEST[:12]."""
    match = RELEASE_NAME.match(NAME)
    assert match.groups() == ("000042", "20240102T030405.060708Z", "0123456789ab")
    assert RELEASE_NAME.match("1234567-20240102T030405.060708Z-0123456789ab")  # > 999999


@pytest.mark.parametrize("name", [
    "00042-20240102T030405.060708Z-0123456789ab",     # sequence under 6 digits
    "000042-20240102T030405Z-0123456789ab",           # no microseconds
    "000042-20240102T030405.060708-0123456789ab",     # not UTC
    "000042-20240102T030405.060708Z-0123456789AB",    # upper-case digest
    "000042-20240102T030405.060708Z-0123456789a",     # digest too short
    "000042-20240102T030405.060708Z-0123456789abc",   # too long
    "x000042-20240102T030405.060708Z-0123456789ab",
    NAME + "\n",                                      # a line, not a name
    "٠٠٠٠٤٢-20240102T030405.060708Z-0123456789ab",    # Arabic-Indic digits are \d too
    ".tmp-" + NAME,
])
def test_names_of_another_shape_are_not_releases(name):
    assert not RELEASE_NAME.match(name)


def test_releases_dir_is_beside_the_root():
    assert releases_dir_name("app") == "app.releases"


def test_the_link_deploy_writes_is_followed():
    assert release_of_link("app", f"app.releases/{NAME}") == NAME


@pytest.mark.parametrize("target", [
    f"/srv/app.releases/{NAME}",        # absolute: not what deploy writes
    f"other.releases/{NAME}",           # another root's releases
    f"app.releases/{NAME}/",            # a trailing slash
    f"app.releases/{NAME}/x",
    f"app.releases//{NAME}",
    f"./app.releases/{NAME}",
    f"app.releases/../app.releases/{NAME}",
    "app.releases/" + NAME + "\n",
    f"app.releases/{NAME[1:]}",
    "app.releases",
    "",
    NAME,
])
def test_any_other_link_is_not(target):
    assert release_of_link("app", target) is None


def test_a_root_name_is_not_a_pattern():
    """A root called `a.b` does not own `aXb.releases` (the name is compared, not matched)."""
    assert release_of_link("a.b", f"aXb.releases/{NAME}") is None
    assert release_of_link("a.b", f"a.b.releases/{NAME}") == NAME
