"""The registry source with bearer token auth: Debian's docker-registry configured for
tokens, and a small token service (on loopback, in this test) that issues JWTs signed
with a throwaway key only to the right basic-auth credentials."""

import base64
import datetime
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tests.conftest import docker_build, droot, free_port, start_registry, stop, wait_for_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from tests.image.conftest import PREFIX, listing

SERVICE, ISSUER = "droot-test-registry", "droot-test-issuer"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_key(directory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    bundle = directory / "token-ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, bundle


class TokenService(BaseHTTPRequestHandler):
    key = cert = None
    granted = []  # scopes that got a token

    def do_GET(self):
        from urllib.parse import parse_qs, urlparse
        query = parse_qs(urlparse(self.path).query)
        expected = "Basic " + base64.b64encode(b"droot:s3cret").decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        scope = query.get("scope", [""])[0]
        _, repository, actions = scope.split(":")
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": "droot", "aud": query.get("service", [""])[0],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(),
                  "access": [{"type": "repository", "name": repository, "actions": actions.split(",")}]}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        body = json.dumps({"token": f"{signing_input}.{b64(signature)}"}).encode()
        TokenService.granted.append(scope)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def token_registry(tmp_path, docker_client):
    """A registry holding a small image, answering only to bearer tokens."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "app").write_bytes(open("/bin/busybox", "rb").read())
    (context / "Dockerfile").write_text('FROM scratch\nCOPY app /app\nENV TOKEN_TEST="yes it is"\n')
    tag = f"{PREFIX}/token:latest"
    docker_build(docker_client, context, tag)
    storage = tmp_path / "registry"
    storage.mkdir()
    try:
        # fill the storage through an open registry, then serve it with token auth
        process, address = start_registry(storage)
        remote = f"{address}/{PREFIX}/token:latest"
        try:
            subprocess.run(["docker", "tag", tag, remote], check=True)
            subprocess.run(["docker", "push", "-q", remote], check=True, capture_output=True)
            subprocess.run(["docker", "rmi", remote], check=True, capture_output=True)
        finally:
            stop(process)
    finally:
        docker_client.images.remove(tag, force=True)

    TokenService.key, TokenService.cert, bundle = signing_key(tmp_path)
    TokenService.granted = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = free_port()
    config = storage / "token.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  token:\n    realm: http://127.0.0.1:{server.server_port}/token\n"
        f"    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n")
    log = open(storage / "token.log", "w")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, "docker-registry")
        yield f"127.0.0.1:{port}/{PREFIX}/token:latest"
    finally:
        stop(process)
        log.close()
        server.shutdown()
        server.server_close()


def test_bearer_token_from_the_realm_with_basic_credentials(token_registry, tmp_path):
    anonymous = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "none")}
    refused = droot("export", f"docker://{token_registry}", "-o", tmp_path / "x.tar", env=anonymous)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "token service refused (401)" in refused.stderr
    assert not (tmp_path / "x.tar").exists()

    env = {**anonymous, "DROOT_REGISTRY_USER": "droot", "DROOT_REGISTRY_PASSWORD": "s3cret"}
    out = tmp_path / "image.tar"
    result = droot("export", f"docker://{token_registry}", "-o", out, env=env)
    assert result.returncode == 0, result.stderr
    files = listing(out.read_bytes())
    assert "app" in files
    assert TokenService.granted == [f"repository:{PREFIX}/token:pull"]
