"""A malformed docker:// reference is refused as malformed, before any connection (it
used to be blamed on the network)."""

import socket
import threading

import pytest

from tests.conftest import droot


@pytest.fixture
def listener():
    """A TCP port on loopback that counts the connections made to it (and closes them)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)  # so that the thread sees `done` (close() does not wake accept)
    connections = []
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            connections.append(client)
            client.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], connections
    finally:
        done.set()
        thread.join()
        server.close()


@pytest.mark.parametrize("reference, reason", [
    (":bad/x", "':bad' is not a host name"),
    ("a..b/x", "'a..b' is not a host name"),
    ("[::1/x", "'[::1' is not an [IPv6] address"),
    ("localhost:99999/x", "has a bad port"),
    ("host:abc/x", "has a bad port"),
    ("busybox/x", "'busybox' is not a registry host"),
    ("localhost:5000", "no repository after the host"),
    ("127.0.0.1:{port}/Upper", "bad repository name 'Upper'"),
    ("127.0.0.1:{port}/a//b", "bad repository name 'a//b'"),
    ("127.0.0.1:{port}/app:", "bad tag ''"),
    ("127.0.0.1:{port}/app@sha256", "bad digest 'sha256'"),
])
def test_a_malformed_reference_is_refused_before_any_connection(tmp_path, listener, reference,
                                                                reason):
    port, connections = listener
    source = f"docker://{reference.format(port=port)}"
    for command in (["export", source, "-o", tmp_path / "out.tar"],
                    ["push", source, tmp_path / "out.tar.gz"]):
        result = droot(*command)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"droot: {source}: malformed registry reference, "
                                        "expected docker://HOST[:PORT]/REPO[:TAG|@DIGEST]: ")
        assert reason in result.stderr and result.stderr.count("\n") == 1
    assert connections == []
    assert list(tmp_path.iterdir()) == []


def test_a_well_formed_reference_does_connect(tmp_path, listener):
    """The counterpart: the same port is reached when the reference is well formed, so the
    test above would see a connection."""
    port, connections = listener
    result = droot("export", f"docker://127.0.0.1:{port}/app:v1", "-o", tmp_path / "out.tar")
    assert result.returncode == 1 and "malformed" not in result.stderr
    assert len(connections) >= 1
    assert list(tmp_path.iterdir()) == []
