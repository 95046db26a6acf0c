"""The values of `droot run`'s limit options (droot.run.cgroups), refused as usage errors
before anything is set up, and the cgroup names droot gives an app."""

import pytest

from droot.core.errors import UsageError
from droot.run import cgroups


@pytest.mark.parametrize("parse, text", [
    (cgroups.parse_memory, "12XB"), (cgroups.parse_memory, "-5M"), (cgroups.parse_memory, ""),
    (cgroups.parse_memory, "10"), (cgroups.parse_cpus, "lots"), (cgroups.parse_cpus, "0"),
    (cgroups.parse_cpus, "nan"), (cgroups.parse_pids, "0"), (cgroups.parse_pids, "1e3")])
def test_bad_values_are_refused(parse, text):
    with pytest.raises(UsageError):
        parse(text)


@pytest.mark.parametrize("text, size", [("64M", 64 << 20), ("1.5g", 3 << 29),
                                        ("2GiB", 2 << 30), ("1048576", 1 << 20)])
def test_sizes(text, size):
    assert cgroups.parse_memory(text) == size


def test_cgroup_names_round_trip():
    for path in ("/srv/app", "/srv/my-app/current", "/a b/ç", "/.hidden/x"):
        name = cgroups.cgroup_name(path, 42)
        assert "/" not in name
        assert cgroups.parse_cgroup_name(name) == (path, 42)
    assert cgroups.cgroup_name("/srv/app", 7) == "srv-app.7"
