"""A registry as an image source (docker://HOST[:PORT]/REPO[:TAG|@DIGEST]): the
distribution API v2 over HTTPS, or plain HTTP for loopback hosts and with --plain-http
(DROOT_PLAIN_HTTP=1). No daemon, nothing written to disk: each layer blob is streamed,
decompressed and checked against its digest as it is read; a layer that must be read
twice (see flatten.py) is downloaded twice.

Credentials, first found: DROOT_REGISTRY_USER and DROOT_REGISTRY_PASSWORD, then the
`auths` of Docker's config.json ($DOCKER_CONFIG or ~/.docker; credential helpers are not
consulted). They are sent as basic auth or exchanged for a bearer token, as the
registry's WWW-Authenticate challenge asks.
"""

import base64
import io
import ipaddress
import json
import os
import re

from droot.core.errors import DrootError, UsageError
from droot.image.blobs import (DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPES, OCI_INDEX, OCI_MANIFEST,
                               READ_BUFFER, Image, Layer, VerifyingRaw, VerifyingReader, choose_manifest,
                               config_from_document, manifest_layers, uncompressed, verified_json)

ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
TIMEOUT = (30, 300)  # connect, read (seconds)
SMALL_LIMIT = 16 << 20
# The grammar of distribution's reference package (docker/distribution reference/regexp.go).
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"\w[\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def parse_reference(reference: str) -> tuple[str, str, str]:
    """(host, repository, tag or digest) of HOST[:PORT]/REPO[:TAG|@DIGEST]. A malformed
    reference is refused here, before any connection."""
    def malformed(reason: str):
        return UsageError(f"docker://{reference}: malformed registry reference, expected "
                          f"docker://HOST[:PORT]/REPO[:TAG|@DIGEST]: {reason}")

    host, _, rest = reference.partition("/")
    host_problem = _host_problem(host)
    if host_problem:
        raise malformed(host_problem)
    rest, at, digest = rest.partition("@")
    repository, colon, tag = rest.partition(":")
    if not repository:
        raise malformed("no repository after the host")
    if not _REPOSITORY.fullmatch(repository):
        raise malformed(f"bad repository name {repository!r} (lowercase letters and digits, "
                        "with . _ - inside and / between components)")
    if colon and not _TAG.fullmatch(tag):
        raise malformed(f"bad tag {tag!r}")
    if at and not _DIGEST.fullmatch(digest):
        raise malformed(f"bad digest {digest!r} (ALGORITHM:HEX)")
    return host, repository, digest or tag or "latest"


def _host_problem(host: str) -> str | None:
    """Why `host` is not HOST[:PORT] (a name, an IPv4 address or [IPv6]), or None."""
    if host.startswith("["):
        address, bracket, port = host[1:].partition("]")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            bracket = ""
        if not bracket or (port and not port.startswith(":")):
            return f"{host!r} is not an [IPv6] address with an optional port"
        port = port[1:] if port else None
    else:
        name, colon, port = host.partition(":")
        if not _HOST_NAME.fullmatch(name):
            return f"{host!r} is not a host name or IP address with an optional port"
        if not (colon or "." in name or name == "localhost"):
            return (f"{host!r} is not a registry host (one with a dot or a port, or "
                    "localhost: there is no default registry)")
        port = port if colon else None
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return f"{host!r} has a bad port (a number from 1 to 65535)"
    return None


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or host.startswith("[") else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def network_reason(error) -> str:
    """The root cause in a requests error's long text ("Connection refused", ...)."""
    text = str(error)
    if "SSL" in text or "certificate" in text:
        match = re.search(r"\] ([^'\"()]+)", text)
        return f"TLS: {match.group(1).strip() if match else type(error).__name__} (for a registry " \
               "without TLS use --plain-http)"
    match = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", text)
    return match.group(1).strip() if match else type(error).__name__


def credentials(host: str) -> tuple[str, str] | None:
    user, password = os.environ.get("DROOT_REGISTRY_USER"), os.environ.get("DROOT_REGISTRY_PASSWORD")
    if user and password is not None:
        return user, password
    directory = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    try:
        with open(os.path.join(directory, "config.json")) as file:
            auths = json.load(file).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/"):
        encoded = (auths.get(key) or {}).get("auth")
        if encoded:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            return user, password
    return None


class Registry:
    def __init__(self, host: str, repository: str, plain_http: bool = False):
        import requests
        self.host = host
        self.repository = repository
        plain = plain_http or is_loopback(host)
        self.base = f"{'http' if plain else 'https'}://{host}/v2/{repository}"
        self.session = requests.Session()
        self.credentials = credentials(host)
        self.authorization = None

    def close(self):
        self.session.close()

    def get(self, path: str, what: str, accept: str | None = None, stream: bool = False):
        import requests
        headers = {"Accept": accept} if accept else {}
        try:
            for attempt in range(2):
                if self.authorization:
                    headers["Authorization"] = self.authorization
                response = self.session.get(f"{self.base}/{path}", headers=headers, stream=stream,
                                            timeout=TIMEOUT)
                if response.status_code != 401 or attempt:
                    break
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self.authenticate(challenge, what)
        except requests.RequestException as error:
            raise DrootError(f"cannot reach the registry {self.host}: {network_reason(error)}") from None
        if response.status_code == 200:
            return response
        response.close()
        if response.status_code == 401:
            hint = ("the credentials were refused" if self.credentials else
                    "it needs credentials: set DROOT_REGISTRY_USER/DROOT_REGISTRY_PASSWORD or docker login")
            raise DrootError(f"{what}: access denied by the registry (401): {hint}")
        if response.status_code == 404:
            raise DrootError(f"{what}: not found in the registry (404)")
        raise DrootError(f"{what}: the registry answered {response.status_code} {response.reason}")

    def authenticate(self, challenge: str, what: str):
        import requests
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() == "basic":
            if not self.credentials:
                return  # the retry fails with a clear 401
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            self.authorization = f"Basic {token}"
            return
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise DrootError(f"{what}: unsupported registry authentication {challenge!r}")
        query = {"scope": fields.get("scope") or f"repository:{self.repository}:pull"}
        if "service" in fields:
            query["service"] = fields["service"]
        try:
            response = self.session.get(fields["realm"], params=query, auth=self.credentials,
                                        timeout=TIMEOUT)
        except requests.RequestException as error:
            raise DrootError(f"cannot reach the registry's token service: {network_reason(error)}") from None
        if response.status_code != 200:
            hint = ("check the credentials" if self.credentials else "it needs credentials: set "
                    "DROOT_REGISTRY_USER/DROOT_REGISTRY_PASSWORD or docker login")
            raise DrootError(f"{what}: the registry's token service refused "
                             f"({response.status_code}): {hint}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        token = isinstance(answer, dict) and (answer.get("token") or answer.get("access_token"))
        if not token:
            raise DrootError(f"{what}: the registry's token service gave no token")
        self.authorization = f"Bearer {token}"

    def small(self, path: str, what: str, accept: str | None = None):
        """A manifest or config: read whole, up to a limit no honest one comes near."""
        response = self.get(path, what, accept, stream=True)
        with response:
            # a content encoding (gzip'd JSON) is undone: the digest covers the document
            data = io.BufferedReader(ResponseRaw(response, what, decode=True)).read(SMALL_LIMIT + 1)
            if len(data) > SMALL_LIMIT:
                raise DrootError(f"{what} is too large for a manifest or config")
            return data, response.headers.get("Content-Type", "")

    def blob_stream(self, digest: str, what: str, verify: bool):
        response = self.get(f"blobs/{digest}", what, stream=True)
        raw = io.BufferedReader(ResponseRaw(response, what), buffer_size=READ_BUFFER)
        if verify:
            raw = io.BufferedReader(VerifyingRaw(VerifyingReader(raw, digest, what)),
                                    buffer_size=READ_BUFFER)
        return uncompressed(raw)


class ResponseRaw(io.RawIOBase):
    """An HTTP response body as a raw stream; a broken download is one clear error."""

    def __init__(self, response, what: str, decode: bool = False):
        self._response = response
        self._body = response.raw
        self._body.decode_content = decode  # a layer blob: its own bytes, which its digest covers
        self._what = what

    def readable(self):
        return True

    def readinto(self, buffer):
        try:
            return self._body.readinto(buffer)
        except Exception as error:
            raise DrootError(f"{self._what}: download failed ({error})") from None

    def close(self):
        self._response.close()
        super().close()


def open_registry_image(reference: str, plain_http: bool = False) -> Image:
    host, repository, ref = parse_reference(reference)
    what = f"docker://{reference}"
    registry = Registry(host, repository, plain_http)
    try:
        digest = ref if ":" in ref else None
        for _ in range(4):  # an index, then the manifest for this platform
            body, content_type = registry.small(f"manifests/{ref}", what, ACCEPT)
            document = verified_json(body, digest, f"{what}: manifest")
            if not isinstance(document, dict):
                raise DrootError(f"{what}: the manifest is not a JSON object")
            media_type = document.get("mediaType") or content_type.split(";")[0].strip()
            if media_type in INDEX_TYPES or ("manifests" in document and "layers" not in document):
                ref = digest = choose_manifest(document, what)["digest"]
                continue
            break
        else:
            raise DrootError(f"{what}: indexes nested too deeply")
        if document.get("schemaVersion") == 1:
            raise DrootError(f"{what}: schema 1 manifests are not supported")
        config_descriptor, layer_descriptors = manifest_layers(document, what)
        config_digest = config_descriptor["digest"]
        body, _ = registry.small(f"blobs/{config_digest}", f"{what}: config")
        config = config_from_document(verified_json(body, config_digest, f"{what}: config"),
                              config_digest, f"{what}: config")
        layers = []
        for number, descriptor in enumerate(layer_descriptors, 1):
            layer_what = f"{what}: layer {number}/{len(layer_descriptors)} ({descriptor['digest']})"
            layers.append(Layer(layer_what, lambda verify, digest=descriptor["digest"],
                                layer_what=layer_what: registry.blob_stream(digest, layer_what, verify),
                                streamed=True))
        return Image(config, layers, [registry])
    except BaseException:
        registry.close()
        raise
