"""Launching the app: its environment and command (what runs, with which variables), and the exec.

The environment is clean, not the host's: a default PATH and the user's HOME, then the
image's /.drootenv, then `--env-file`, then `-e`, later ones winning; TERM and
systemd's socket-activation variables are passed through, NOTIFY_SOCKET as the app
reaches it (droot.run.notify), and with `--preserve-fds` the variables socket-passing
supervisors describe their descriptors with (SUPERVISOR_VARIABLES).
"""

import os

from droot.core.errors import CommandNotExecutable, CommandNotFound, RunError
from droot.core.releasefiles import CONFIG_FILE, ENV_FILE, parse_config, parse_env
from droot.run import rootfs

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_ENV = f"/{ENV_FILE}"
IMAGE_CONFIG = f"/{CONFIG_FILE}"

# What socket-passing supervisors tell the app about the descriptors they pass, passed
# with `--preserve-fds` and only then: Server::Starter (start_server) and einhorn. Not
# einhorn's EINHORN_SOCK_PATH: a path on the host, which the app cannot reach.
SUPERVISOR_VARIABLES = ("SERVER_STARTER_PORT", "SERVER_STARTER_GENERATION",
                        "EINHORN_FD_COUNT", "EINHORN_FDS", "EINHORN_SOCK_FD",
                        "EINHORN_MASTER_PID", "EINHORN_CHILD_INDEX")
SUPERVISOR_NUMBERED = "EINHORN_FD_"  # EINHORN_FD_0, EINHORN_FD_1, ...


def parse_env_option(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name or "\0" in item:
        raise RunError(f"malformed --env {item!r}: expected NAME=VALUE")
    return name, value


def read_env_file(path: str) -> list[tuple[str, str]]:
    """An `--env-file` on the host: NAME=VALUE lines ending at `\n` (a `\r` before it is
    dropped, for files written on Windows); blank lines and # comments skipped."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as file:
            lines = [line.removesuffix("\r") for line in file.read().split("\n")]
    except OSError as error:
        raise RunError(f"cannot read --env-file {path}: {error.strerror}") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name or "\0" in line:
            raise RunError(f"malformed line {number} of --env-file {path}: expected NAME=VALUE")
        pairs.append((name, value))
    return pairs


def listen_fds() -> int:
    """How many sockets systemd passed (fds 3, 4, …) when they are meant for this process;
    droot execs in place, so they reach the app with the same LISTEN_PID."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0
    count = os.environ.get("LISTEN_FDS", "")
    return int(count) if count.isdigit() else 0


def preserved_fds(value: str | None) -> int:
    """`--preserve-fds N`: descriptors 3..3+N-1, which must all be open, reach the app
    (made inheritable: the exec would close one marked close-on-exec)."""
    if value is None:
        return 0
    if not value.isascii() or not value.isdigit():
        raise RunError(f"--preserve-fds {value!r}: give a number of descriptors (0 or more)")
    count = int(value)
    for descriptor in range(3, 3 + count):
        try:
            os.set_inheritable(descriptor, True)
        except OSError:
            raise RunError(f"--preserve-fds {count}: descriptor {descriptor} is not open (the "
                           f"app would get 3..{2 + count}); give the number the supervisor "
                           "passes") from None
    return count


def supervisor_variables() -> dict:
    """The host's SUPERVISOR_VARIABLES (for `--preserve-fds`)."""
    return {name: value for name, value in os.environ.items()
            if name in SUPERVISOR_VARIABLES
            or (name.startswith(SUPERVISOR_NUMBERED) and name[len(SUPERVISOR_NUMBERED):].isdigit())}


def app_environment(home: str, settings: list[tuple[str, str]], passed_fds: int,
                    passed: dict) -> dict:
    """The app's variables (inside the root): defaults, the image's file, then `settings`,
    then those the supervisor's descriptors and sockets need: systemd's LISTEN_*, and
    `passed` (SUPERVISOR_VARIABLES, NOTIFY_SOCKET as the app reaches it)."""
    env = {"PATH": DEFAULT_PATH, "HOME": home}
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(parse_env(read_image_file(IMAGE_ENV) or ""))
    env.update(settings)
    if passed_fds:
        env["LISTEN_FDS"] = str(passed_fds)
        env["LISTEN_PID"] = str(os.getpid())
        if "LISTEN_FDNAMES" in os.environ:
            env["LISTEN_FDNAMES"] = os.environ["LISTEN_FDNAMES"]
    env.update(passed)
    return env


def read_release_config() -> dict:
    """The image's entrypoint, cmd, working dir and user, from /.droot.json (inside the
    root); empty when the archive carries none."""
    text = read_image_file(IMAGE_CONFIG)
    if text is None:
        return {}
    try:
        return parse_config(text)
    except ValueError as error:
        raise RunError(f"the image's {IMAGE_CONFIG} is not valid: {error}") from None


def read_image_file(path: str) -> str | None:
    """The image's file `path` (inside the root only), None when it has none."""
    try:
        return rootfs.read_text(path)
    except OSError as error:
        raise RunError(f"cannot read the image's {path}: {error.strerror}") from None


def find_executable(name: str, search_path: str) -> str:
    """The file to exec for `name`, searched in PATH inside the root like execvp(3):
    127 when nothing is found, 126 when what is found cannot be executed."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(directory or ".", name) for directory in search_path.split(":")]
    not_executable = None
    for candidate in candidates:
        if not os.path.exists(candidate):
            continue
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            not_executable = not_executable or candidate
            continue
        return candidate
    if not_executable:
        raise CommandNotExecutable(f"{not_executable} inside the root is not executable "
                                   "(a directory, or no execute permission for the user)")
    where = "" if "/" in name else f" in PATH={search_path}"
    raise CommandNotFound(f"command {name!r} not found inside the root{where}")


def execute(argv: list[str], env: dict) -> None:
    """Replace droot with the app (same PID); returns only by raising."""
    path = find_executable(argv[0], env.get("PATH", DEFAULT_PATH))
    try:
        os.execve(path, argv, env)
    except FileNotFoundError:
        raise CommandNotFound(f"cannot run {path}: its interpreter or a library it needs is "
                              "missing inside the root") from None
    except OSError as error:
        raise CommandNotExecutable(f"cannot run {path}: {error.strerror}") from None
