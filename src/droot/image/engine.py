"""The few Docker Engine API calls the daemon source makes: inspect an image, create a
container, export it, remove it.

A local engine on a unix socket (DOCKER_HOST unset or unix://…, the usual case) is
spoken to with the standard library's HTTP client: importing the docker SDK (requests,
urllib3, …) costs a few hundred milliseconds, a tenth of a whole export of a 500 MB
image. Any other DOCKER_HOST (tcp:// with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, ssh://)
goes through the docker SDK.
"""

import http.client
import io
import json
import os
import socket
from urllib.parse import quote, urlencode

from droot.core.errors import DrootError

DEFAULT_SOCKET = "/var/run/docker.sock"
CHUNK = 1 << 16
CREATE_OPTIONS = {
    # a command for images that have none: the container is never started
    "Cmd": ["/droot-export"], "NetworkDisabled": True, "Labels": {"droot.export": "1"},
}


def unreachable(where: str, reason) -> DrootError:
    return DrootError(f"cannot reach the Docker engine at {where} ({reason}); start it, set "
                      "DOCKER_HOST, or export from docker-archive:, oci: or docker://")


class NoSuchImage(DrootError):
    pass


def connect():
    host = os.environ.get("DOCKER_HOST", "")
    if not host or host.startswith("unix://"):
        return SocketEngine(host.removeprefix("unix://") or DEFAULT_SOCKET)
    return SdkEngine(host)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=None)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


class SocketEngine:
    def __init__(self, path: str):
        self.where = f"unix://{path}"
        self._path = path
        self._connections = []

    def _request(self, method: str, url: str, body=None, expect=(200,)):
        connection = _UnixConnection(self._path)
        self._connections.append(connection)
        headers = {"Host": "docker"}
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, url, body=body, headers=headers)
            response = connection.getresponse()
        except OSError as error:
            raise unreachable(self.where, error.strerror or error) from None
        if response.status not in expect:
            message = response.read().decode(errors="replace")
            try:
                message = json.loads(message).get("message", message)
            except (ValueError, AttributeError):
                pass
            response.status_message = message.strip()
        return response

    def image(self, reference: str) -> dict:
        response = self._request("GET", f"/images/{quote(reference, safe='/:@')}/json",
                                 expect=(200,))
        if response.status == 404:
            raise NoSuchImage(reference)
        if response.status != 200:
            raise DrootError(f"the Docker engine cannot look up {reference!r}: "
                             f"{response.status_message}")
        return json.loads(response.read())

    def create(self, image_id: str, name: str):
        response = self._request("POST", "/containers/create?" + urlencode({"name": name}),
                                 {"Image": image_id, **CREATE_OPTIONS}, expect=(201,))
        if response.status != 201:
            raise DrootError(f"the Docker engine cannot create a container: {response.status_message}")
        response.read()

    def export(self, name: str):
        response = self._request("GET", f"/containers/{name}/export")
        if response.status != 200:
            raise DrootError(f"the Docker engine cannot export: {response.status_message}")
        return io.BufferedReader(response, buffer_size=CHUNK)

    def remove(self, name: str):
        response = self._request("DELETE", f"/containers/{name}?force=1&v=1", expect=(204, 404))
        if response.status not in (204, 404):  # 404: never created
            raise DrootError(f"the Docker engine cannot remove container {name}: "
                             f"{response.status_message}")
        response.read()

    def close(self):
        for connection in self._connections:
            connection.close()


class SdkEngine:
    def __init__(self, host: str):
        import docker
        self.where = host
        self._errors = docker.errors
        try:
            self._client = docker.from_env()
            self._client.ping()
        except docker.errors.DockerException as error:
            raise unreachable(host, str(error).split("\n")[0]) from None

    def image(self, reference: str) -> dict:
        try:
            return self._client.api.inspect_image(reference)
        except self._errors.ImageNotFound:
            raise NoSuchImage(reference) from None
        except self._errors.APIError as error:
            raise DrootError(f"the Docker engine cannot look up {reference!r}: {error.explanation}") from None

    def create(self, image_id: str, name: str):
        try:
            self._client.api.create_container(
                image_id, command=CREATE_OPTIONS["Cmd"], name=name, network_disabled=True,
                labels=CREATE_OPTIONS["Labels"])
        except self._errors.APIError as error:
            raise DrootError(f"the Docker engine cannot create a container: {error.explanation}") from None

    def export(self, name: str):
        try:
            chunks = self._client.api.export(name, chunk_size=CHUNK)
        except self._errors.APIError as error:
            raise DrootError(f"the Docker engine cannot export: {error.explanation}") from None
        return io.BufferedReader(ChunkReader(chunks), buffer_size=CHUNK)

    def remove(self, name: str):
        try:
            self._client.api.remove_container(name, force=True, v=True)
        except self._errors.NotFound:
            pass  # never created
        except self._errors.APIError as error:
            raise DrootError(f"the Docker engine cannot remove container {name}: {error.explanation}") from None

    def close(self):
        self._client.close()


class ChunkReader(io.RawIOBase):
    """A raw reader over an iterator of byte chunks (the SDK's streamed response)."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._chunk = memoryview(b"")

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self._chunk:
            try:
                self._chunk = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n
