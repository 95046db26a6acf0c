"""--userns: root inside is an unprivileged range of host ids."""

import os

import pytest

from droot.core.errors import RunError, UsageError
from droot.run import userns
from tests.ops.conftest import fresh_root, run_app

RANGE = "231072:65536"  # explicit: the tests never edit the host's /etc/subuid


@pytest.fixture
def root(tmp_path):
    return fresh_root(tmp_path)


def test_file_created_by_root_inside_is_owned_by_the_mapped_uid(root):
    script = "id -u; cat /proc/self/uid_map; touch /tmp/by-root"
    result = run_app(root, ["--userns", RANGE], ["/bin/sh", "-c", script])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0"  # root inside...
    assert lines[1].split() == ["0", "231072", "65536"]
    status = (root / "tmp" / "by-root").stat()
    assert (status.st_uid, status.st_gid) == (231072, 231072)  # ...nobody outside


def test_root_inside_cannot_write_host_owned_files(root):
    write = ["/bin/sh", "-c", "echo evil >> /etc/passwd && echo written"]
    # Without a user namespace root inside writes the root's files (the test can fail)...
    assert "written" in run_app(root, [], write).stdout
    # ...with one, files owned by host uid 0 belong to nobody inside: read-only for "root".
    result = run_app(root, ["--userns", RANGE], write)
    assert "written" not in result.stdout
    assert (root / "etc" / "passwd").read_text().count("evil") == 1


def test_users_inside_map_into_the_range(root):
    result = run_app(root, ["--userns", RANGE, "-u", "app"],
                     ["/bin/sh", "-c", "id -u; touch /tmp/by-app"])
    assert result.stdout.strip() == "1000", result.stderr
    assert (root / "tmp" / "by-app").stat().st_uid == 231072 + 1000


def test_subordinate_ranges_are_read_from_the_files(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("# comment\nother:100000:65536\nops-test:300000:1000\n"
                      "ops-test:500000:65536\nbroken:x:y\n")
    subgid.write_text("ops-test:400000:2000\n")
    uids, gids = userns.parse("ops-test", str(subuid), str(subgid))
    assert (uids.first, uids.count, gids.first, gids.count) == (300000, 1000, 400000, 2000)


def test_no_subordinate_range_is_a_clear_error(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("other:100000:65536\n")
    with pytest.raises(RunError, match="no subordinate range for 'ops-nobody'"):
        userns.parse("ops-nobody", str(subuid), str(subuid))


@pytest.mark.parametrize("value", ["0:65536", "100000:0", "abc:10", "4294967290:65536"])
def test_bad_ranges_are_refused(value):
    with pytest.raises(UsageError):
        userns.parse(value)


def test_the_namespace_is_entered_after_the_mounts(root):
    # The mounts belong to the host's user namespace: even with every capability kept,
    # root inside cannot undo them; without the user namespace it can (the test can fail).
    keep = ["--no-dropcaps"]
    umount = ["/bin/sh", "-c", "umount /dev/shm && echo gone"]
    assert "gone" in run_app(root, keep, umount).stdout
    result = run_app(root, [*keep, "--userns", RANGE], umount)
    assert "gone" not in result.stdout


def test_bind_mounts_stay_usable(root, tmp_path):
    shared = tmp_path / "shared"  # owned by the mapped root: root inside writes there
    shared.mkdir()
    os.chown(shared, 231072, 231072)
    host_only = tmp_path / "host-only"  # owned by host root, mode 755: not for root inside
    host_only.mkdir(mode=0o755)
    script = ("touch /shared/by-root && echo shared-ok; "
              "touch /host-only/by-root && echo host-only-ok; true")
    result = run_app(root, ["--userns", RANGE, "--bind", f"{shared}:/shared",
                            "--bind", f"{host_only}:/host-only"], ["/bin/sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["shared-ok"]
    assert (shared / "by-root").stat().st_uid == 231072
    assert not (host_only / "by-root").exists()
    # Without the user namespace root inside does write there (the check above can fail).
    plain = run_app(root, ["--bind", f"{host_only}:/host-only"], ["/bin/sh", "-c", script])
    assert "host-only-ok" in plain.stdout
