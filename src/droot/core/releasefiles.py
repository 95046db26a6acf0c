"""The image config that travels inside the archive, beside the root filesystem.

`droot export` writes both files at the root of the stream; `droot run` reads them.

- `/.drootenv`: the image's environment, one `KEY=VALUE` a line, the original droot's
  format (a value may hold `=`, spaces and quotes; it ends at the newline).
- `/.droot.json`: what `droot run` needs when no command is given, and where the
  image came from::

      {"version": 1, "entrypoint": ["/app"] | null, "cmd": ["--flag"] | null,
       "working_dir": "/srv", "user": "app:app", "env": ["K=V", ...],
       "source": "docker-archive:app.tar", "digest": "sha256:…"}

  `env` repeats the environment exactly (even a value with a newline, which
  `/.drootenv` cannot carry); `droot run` uses `/.drootenv`, which operators may edit.

This module is imported by `droot run`: standard library only, and `json` (with the `re`
it imports) only where a function needs it.
"""

ENV_FILE = ".drootenv"
CONFIG_FILE = ".droot.json"
DROOT_FILES = frozenset((ENV_FILE, CONFIG_FILE))  # what droot itself adds at the root
FORMAT_VERSION = 1


def format_env(env: list[str]) -> bytes:
    """`/.drootenv` for an image's `Env` list (`KEY=VALUE` strings). Entries this format
    cannot carry (a newline, or a lone surrogate, which JSON allows and UTF-8 does not)
    are left to `/.droot.json`, which escapes them."""
    lines = []
    for item in env:
        try:
            line = f"{item}\n".encode()
        except UnicodeEncodeError:
            continue
        if b"\n" not in line[:-1]:
            lines.append(line)
    return b"".join(lines)


def parse_env(text: str) -> dict[str, str]:
    """The variables of a `/.drootenv` file: lines end at `\n` only, each splits at its first
    `=` and the rest is kept exactly (a `\r`, form feed or other line break of Unicode is
    part of the value). Blank lines, lines without `=`, with an empty name or with a NUL
    (which no environment can carry) are ignored."""
    env = {}
    for line in text.split("\n"):
        name, sep, value = line.partition("=")
        if sep and name and "\0" not in line:
            env[name] = value
    return env


def format_config(*, entrypoint, cmd, working_dir, user, env, source, digest) -> bytes:
    import json
    return json.dumps({
        "version": FORMAT_VERSION,
        "entrypoint": entrypoint or None,
        "cmd": cmd or None,
        "working_dir": working_dir or "",
        "user": user or "",
        "env": list(env or []),
        "source": source,
        "digest": digest,
    }, indent=2).encode() + b"\n"


def parse_config(text: str) -> dict:
    """The `/.droot.json` fields, with defaults for what an older file lacks."""
    import json
    config = json.loads(text)
    if not isinstance(config, dict):
        raise ValueError("not a JSON object")
    return {
        "entrypoint": config.get("entrypoint") or [],
        "cmd": config.get("cmd") or [],
        "working_dir": config.get("working_dir") or "",
        "user": config.get("user") or "",
        "env": config.get("env") or [],
        "source": config.get("source") or "",
        "digest": config.get("digest") or "",
    }
