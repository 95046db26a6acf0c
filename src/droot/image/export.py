"""`droot export`: an image, from any of the four sources, as one flattened root
filesystem tar stream, with the image config beside it (/.drootenv, /.droot.json).

Sources (the naming convention of skopeo, podman and buildah):
  NAME[:TAG] or an image ID        the Docker engine (container created, exported, removed)
  docker-archive:PATH              a `docker save` tarball, no daemon
  oci:PATH[:TAG]                   an OCI image layout directory, no daemon
  docker://HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry, no daemon
"""

from dataclasses import dataclass, field

from droot.core import releasefiles
from droot.core.errors import DrootError
from droot.image.tarstream import END_OF_ARCHIVE, file_member

# Files droot writes itself: an image's own copies (an image made from a droot export)
# are left out, so the stream carries exactly one of each.


@dataclass
class ImageConfig:
    """The parts of an image's config that travel with the root filesystem."""
    env: list = field(default_factory=list)
    entrypoint: list | None = None
    cmd: list | None = None
    working_dir: str = ""
    user: str = ""
    digest: str = ""   # the image ID: sha256 of the image config, the same from every source

    @classmethod
    def from_docker(cls, config: dict | None, digest: str) -> "ImageConfig":
        """From the `Config`/`config` object of a Docker or OCI image config."""
        config = config or {}
        return cls(env=list(config.get("Env") or []), entrypoint=config.get("Entrypoint") or None,
                   cmd=config.get("Cmd") or None, working_dir=config.get("WorkingDir") or "",
                   user=config.get("User") or "", digest=digest)


class TarOutput:
    """The stream being written: every byte goes to `out` and is counted for progress."""

    def __init__(self, out, progress=None):
        self._out_write = out.write
        self.progress = progress
        self.bytes = 0

    def write(self, data):
        self._out_write(data)
        self.bytes += len(data)
        if self.progress is not None:
            self.progress.update(len(data))

    def finish(self, config: ImageConfig, source: str):
        """Append the image config files and the end-of-archive marker."""
        self.write(file_member(releasefiles.ENV_FILE, releasefiles.format_env(config.env)))
        self.write(file_member(releasefiles.CONFIG_FILE, releasefiles.format_config(
            entrypoint=config.entrypoint, cmd=config.cmd, working_dir=config.working_dir,
            user=config.user, env=config.env, source=source, digest=config.digest)))
        self.write(END_OF_ARCHIVE)


def source_kind(source: str) -> tuple[str, str]:
    """(kind, reference) of an image source string."""
    for prefix, kind in (("docker-archive:", "docker-archive"), ("oci:", "oci"),
                         ("docker://", "registry")):
        if source.startswith(prefix):
            reference = source[len(prefix):]
            if not reference:
                raise DrootError(f"image source {source!r} names nothing after {prefix!r}")
            return kind, reference
    if not source:
        raise DrootError("no image given")
    return "daemon", source


def export_image(source: str, out, *, progress=None, plain_http: bool = False) -> dict:
    """Write the uncompressed, flattened tar stream of image `source` into the binary
    file object `out`; return facts about it ({"source", "digest", "layers", "bytes"}).
    `plain_http`: a docker:// registry is spoken to over HTTP, not HTTPS."""
    kind, reference = source_kind(source)
    output = TarOutput(out, progress)
    if kind == "daemon":
        from droot.image.daemon import export_from_daemon
        config = export_from_daemon(reference, output)
        layers = None
    else:
        from droot.image.flatten import flatten
        image = open_daemonless(kind, reference, plain_http)
        try:
            flatten(image.layers, output)
        finally:
            image.close()
        config, layers = image.config, len(image.layers)
    output.finish(config, source)
    return {"source": source, "digest": config.digest, "layers": layers, "bytes": output.bytes}


def open_daemonless(kind: str, reference: str, plain_http: bool = False):
    if kind == "docker-archive":
        from droot.image.archive import open_docker_archive
        return open_docker_archive(reference)
    if kind == "oci":
        from droot.image.archive import open_oci_layout
        return open_oci_layout(reference)
    from droot.image.registry import open_registry_image
    return open_registry_image(reference, plain_http)
