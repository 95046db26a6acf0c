"""droot.core.mountinfo: the kernel's mount table, parsed."""

from droot.core import mountinfo

TABLE = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "80 22 0:44 / /srv/my\\040app/tmp rw,nosuid,nodev - tmpfs none rw,mode=1777\n"
    "81 22 0:22 / /sys ro,nosuid,nodev,noexec - sysfs sysfs rw\n"
    "not a mountinfo line\n")


def test_points_types_and_the_mounts_own_read_only_flag():
    mounts = mountinfo.parse(TABLE)
    assert [(m.mount_id, m.point, m.fstype, m.read_only) for m in mounts] == [
        (22, "/", "ext4", False), (80, "/srv/my app/tmp", "tmpfs", False),
        (81, "/sys", "sysfs", True)]
    # The superblock's options are not the mount's: sysfs is "rw" there.
    assert mounts[2].super_options == "rw"
    assert mountinfo.containing("/srv/my app/tmp/x", mounts).mount_id == 80
