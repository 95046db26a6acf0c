"""What the engine source loses (docs/export.md says so) and the lossless path that
`docker save` + `docker-archive:` offers for the same image, side by side."""

import io
import os
import subprocess
import tarfile

from tests.conftest import droot


def metadata(archive: bytes, name: str) -> tuple:
    with tarfile.open(fileobj=io.BytesIO(archive)) as reader:
        for member in reader:
            if member.name.strip("./") == name:
                xattrs = {key: value for key, value in member.pax_headers.items()
                          if key.startswith("SCHILY.xattr.")}
                return member.pax_headers.get("mtime", str(member.mtime)), xattrs
    raise AssertionError(f"{name} not in the export")


def test_the_engine_loses_what_docker_save_keeps(tmp_path, docker_client):
    root = tmp_path / "root"
    root.mkdir()
    (root / "old").write_text("from 1960\n")
    os.utime(root / "old", ns=(-315_619_200_000_000_000,) * 2)
    (root / "precise").write_text("nanoseconds\n")
    os.utime(root / "precise", ns=(1_700_000_000_123_456_789,) * 2)
    os.setxattr(root / "precise", "user.note", b"kept")
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "--format=posix", "--xattrs", "--xattrs-include=*",
                    "--numeric-owner", "-C", root, "-cf", layer, "."], check=True)
    tag = f"droot-test-lossless/probe:{os.getpid()}"
    subprocess.run(["docker", "import", layer, tag], check=True, capture_output=True)
    try:
        saved = tmp_path / "saved.tar"
        subprocess.run(["docker", "save", tag, "-o", saved], check=True)
        engine, lossless = tmp_path / "engine.tar", tmp_path / "lossless.tar"
        for source, output in ((tag, engine), (f"docker-archive:{saved}", lossless)):
            result = droot("export", source, "-o", output, "--compress", "none")
            assert result.returncode == 0, result.stderr
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)
    engine, lossless = engine.read_bytes(), lossless.read_bytes()
    # docker save + docker-archive: exactly what the layer had.
    assert metadata(lossless, "old") == ("-315619200", {})
    assert metadata(lossless, "precise") == ("1700000000.123456789",
                                             {"SCHILY.xattr.user.note": "kept"})
    # The engine's export: pre-1970 times, nanoseconds and xattrs other than
    # security.capability are gone (the engine's doing, documented).
    assert metadata(engine, "old") != metadata(lossless, "old")
    assert metadata(engine, "precise") == ("1700000000", {})
