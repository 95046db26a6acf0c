"""The kernel's mount table of this process (/proc/self/mountinfo), for `droot run` and
`droot umount`. Standard library only, and no `re`: `droot run` reads it on every start."""


class Mount:
    def __init__(self, mount_id: int, point: str):
        self.mount_id = mount_id
        self.point = point


def decode(field: str) -> str:
    """A mountinfo field with its octal escapes (space, tab, newline, backslash) undone."""
    parts = field.split("\\")
    decoded = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 3 and all(c in "01234567" for c in part[:3]):
            decoded.append(chr(int(part[:3], 8)) + part[3:])
        else:
            decoded.append("\\" + part)
    return "".join(decoded)


def parse(text: str) -> list[Mount]:
    """The mounts listed in mountinfo text, in its order."""
    found = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[0].isdigit():
            found.append(Mount(int(fields[0]), decode(fields[4])))
    return found


def read() -> list[Mount]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
        return parse(file.read())


def containing(path: str, mounts: list[Mount]) -> Mount:
    """The mount that `path` (absolute, resolved) lies on: the last one listed (the top of
    a stack) among those whose mount point is the longest ancestor of `path`."""
    def covers(point: str) -> bool:
        return point == "/" or path == point or path.startswith(point + "/")
    candidates = [mount for mount in mounts if covers(mount.point)]
    longest = max(len(mount.point) for mount in candidates)
    return [mount for mount in candidates if len(mount.point) == longest][-1]
