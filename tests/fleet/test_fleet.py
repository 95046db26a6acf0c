"""A fleet of 16 hosts (network namespaces, each with its own deploy root, linked by veth to
a bridge in the S3 server's namespace: netfleet.py) pulls a release from a real moto S3
server all at once, with three faults during the rollout of release 2:

(a) host 0's link is cut mid-download (its eth0 set down once 1 MiB has arrived) and
    mended only after its pull has reported a failed attempt;
(b) the S3 server is killed (SIGKILL) while hosts 2 and 3 are mid-download, and started
    again on the same address with the same objects (fleet_s3.py: moto holds its objects
    in memory, so the restarted server loads them again before it listens for the hosts);
(c) host 1's deploy root is on a 5 MB tmpfs: release 1 fits, release 2 does not.

Hosts 0, 2 and 3 receive at 8 Mbit/s (tc's token bucket on their link) so that their
downloads last long enough for the faults to land in the middle. boto3's own retries are
cut to 2 attempts (AWS_MAX_ATTEMPTS, the standard variable), so that a fault reaches
droot's retries within seconds.
"""

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fleet.netfleet import Fleet, make_release

HOSTS = 16
LINK_CUT, DISK_FULL, RESTARTED = 0, 1, (2, 3)
BUCKET = "fleet"
MiB = 1 << 20


def tree(directory: Path) -> dict:
    """path -> (mode, owner, group, mtime, content digest or link target) of everything."""
    def content(path: Path):
        if path.is_symlink():
            return os.readlink(path)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {str(path.relative_to(directory)): (info.st_mode, info.st_uid, info.st_gid,
                                               int(info.st_mtime), content(path))
            for path in directory.rglob("*") for info in [path.lstat()]}


def entries(root: Path) -> list[str]:
    """ROOT.releases but its lock file and deploy record: the releases, and any staging
    directory a failed attempt left behind."""
    return sorted(set(os.listdir(f"{root}.releases")) - {".lock", ".deployed"})


@dataclass
class Rollout:
    fleet: Fleet
    sources: dict
    first_release: dict = field(default_factory=dict)     # host -> release name
    status: dict = field(default_factory=dict)            # host -> exit status of pull 2
    lines: dict = field(default_factory=dict)             # host -> its stderr lines
    second_pull: dict = field(default_factory=dict)       # host -> (status, lines)
    cut_at: int = 0                                       # bytes host 0 had received
    killed_while_running: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet")
    sources = {1: make_release(work, 1, 0), 2: make_release(work, 2, 3 * MiB)}
    disk = work / f"host{DISK_FULL}"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m,mode=0755", "droot-fleet-disk",
                    disk], check=True)
    try:
        with Fleet(work, HOSTS) as fleet:
            yield roll_out(fleet, work, sources)
    finally:
        subprocess.run(["umount", "-l", disk], check=True)


def roll_out(fleet: Fleet, work: Path, sources: dict) -> Rollout:
    outcome = Rollout(fleet, sources)
    fleet.environment = {"AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}
    store = work / "store"
    fleet.start_s3(store)
    # Release 1 everywhere, all at once, no fault.
    first = [fleet.pull(host, f"s3://{BUCKET}/app-1.tar.gz") for host in range(HOSTS)]
    for host, pull in enumerate(first):
        assert pull.wait() == 0, (host, pull.lines)
        outcome.first_release[host] = os.path.basename(os.readlink(fleet.root(host)))
    # Release 2, all at once, with the faults.
    for host in (LINK_CUT, *RESTARTED):
        fleet.throttle(host, "8mbit")
    before = {host: fleet.received(host) for host in range(HOSTS)}
    pulls = {host: fleet.pull(host, f"s3://{BUCKET}/app-2.tar.gz", "--retries", "5",
                              "--timeout", "3") for host in range(HOSTS)}

    def arrived(host, amount):
        return lambda: fleet.received(host) - before[host] > amount or not pulls[host].running()

    # (a) the cable is cut after 1 MiB, mended once the pull says an attempt failed.
    fleet.wait_until(arrived(LINK_CUT, MiB), "host 0's first MiB")
    fleet.link(LINK_CUT, False)
    outcome.cut_at = fleet.received(LINK_CUT) - before[LINK_CUT]
    outcome.killed_while_running[LINK_CUT] = pulls[LINK_CUT].running()
    # (b) the server dies while hosts 2 and 3 are downloading, and comes back.
    fleet.wait_until(lambda: all(arrived(host, MiB)() for host in RESTARTED),
                     "hosts 2 and 3's first MiB")
    for host in RESTARTED:
        outcome.killed_while_running[host] = pulls[host].running()
    fleet.kill_s3()
    fleet.start_s3(store)
    fleet.wait_until(lambda: any("attempt" in line for line in pulls[LINK_CUT].lines)
                     or not pulls[LINK_CUT].running(), "host 0's failed attempt")
    fleet.link(LINK_CUT, True)
    for host, pull in pulls.items():
        outcome.status[host] = pull.wait()
        outcome.lines[host] = pull.lines
    # A host that gave up on the network (75) pulls again, as its next timer would.
    for host, status in outcome.status.items():
        if status == 75:
            again = fleet.pull(host, f"s3://{BUCKET}/app-2.tar.gz")
            outcome.second_pull[host] = (again.wait(), again.lines)
    return outcome


def final_status(outcome: Rollout, host: int) -> int:
    return outcome.second_pull.get(host, (outcome.status[host],))[0]


def test_every_line_is_one_droot_line(rollout):
    for host, lines in rollout.lines.items():
        every = lines + rollout.second_pull.get(host, (0, []))[1]
        assert every, host  # at least the deploy summary or the failure
        for line in every:
            assert line.startswith("droot: "), (host, every)
            assert "Traceback" not in line and "internal error" not in line, (host, line)


def test_the_healthy_hosts_have_release_2_exactly(rollout):
    expected = tree(rollout.sources[2])
    for host in range(HOSTS):
        if host == DISK_FULL:
            continue
        assert final_status(rollout, host) == 0, (host, rollout.lines[host])
        root = rollout.fleet.root(host)
        assert (root / "MARKER").read_text() == "release 2\n"
        assert tree(root) == expected, host
        # The new release beside the first (the rollback target), no staging left over.
        assert entries(root) == sorted([rollout.first_release[host],
                                        os.path.basename(os.readlink(root))]), host


def test_a_cut_link_fails_an_attempt_and_the_retry_succeeds(rollout):
    assert rollout.killed_while_running[LINK_CUT]
    assert 0 < rollout.cut_at < (rollout.sources[2] / "blob").stat().st_size
    lines = rollout.lines[LINK_CUT]
    failed = [line for line in lines if line.startswith("droot: pull attempt ")]
    assert failed and failed[0].startswith("droot: pull attempt 1/6 failed: "), lines
    assert "; retrying in " in failed[0]
    assert final_status(rollout, LINK_CUT) == 0


def test_the_server_restarted_mid_download(rollout):
    for host in RESTARTED:
        assert rollout.killed_while_running[host], host
        assert final_status(rollout, host) == 0, (host, rollout.lines[host])


def test_the_full_disk_fails_with_one_line_and_keeps_release_1(rollout):
    host = DISK_FULL
    assert rollout.status[host] == 1, rollout.lines[host]
    lines = rollout.lines[host]
    # Tried once: never again on a full disk (an attempt before it may have met the
    # restarting server, which is a line of its own).
    assert lines[-1].startswith("droot: the disk is full: /"), lines
    assert "No space left on device" in lines[-1], lines
    assert sum("disk is full" in line for line in lines) == 1, lines
    root = rollout.fleet.root(host)
    assert (root / "MARKER").read_text() == "release 1\n"
    assert tree(root) == tree(rollout.sources[1])
    assert entries(root) == [rollout.first_release[host]]
