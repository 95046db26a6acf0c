"""Signed releases, in OpenSSH's signature format (`ssh-keygen -Y sign` / `-Y verify`,
the keys operators already manage), through the real ssh-keygen: droot parses no key
and checks no signature itself.

What is signed is the release's `.sha256` sidecar, exactly as push writes it beside the
archive (`sha256sum` format, which skips `#` lines)::

    HEX  NAME
    # droot-pushed NANOSECONDS

the archive's SHA-256, its name (the last part of its key or path) and when it was
pushed (nanoseconds since the epoch, UTC). A signature therefore vouches for these bytes
under this name, pushed then: it cannot be moved onto another name (`app-v1.tar.gz`'s
onto `app.tar.gz`), and a host that remembers the newest push time it accepted can tell
an old release put back from a new one (droot.deploy.deploy). The name and not the whole
location: a release copied to another bucket, a path store or a presigned URL keeps
verifying. The signature is `SIDECAR.sig`, which is what `ssh-keygen -Y sign` itself
writes for the sidecar, so it verifies by hand too::

    ssh-keygen -Y verify -f ALLOWED_SIGNERS -I droot -n droot-release \\
        -s app.tar.gz.sha256.sig < app.tar.gz.sha256 && sha256sum -c app.tar.gz.sha256

Sidecars of droot before push times have no `# droot-pushed` line, and their signatures
cover the first line alone: they still verify, as releases of unknown age (`pushed` None),
which a pull with --trusted-keys refuses unless --allow-downgrade is given.

Trusted keys are read in `authorized_keys` form, one public key a line, and turned into
ssh-keygen's "allowed signers" form with one principal for all of them. Options about
logins (`from=`, `command=`, `no-pty`, `restrict`, ...) say nothing about signatures and
are ignored; `expiry-time` becomes `valid-before` (an expired key no longer signs
releases); `cert-authority` is refused (a certificate would have to name droot's
principal), and so is `verify-required`: allowed signers have no such option, so
ssh-keygen could not demand the FIDO user verification the operator asked for.
"""

import os
import re
import subprocess
import tempfile

from droot.core.errors import DrootError, UsageError

NAMESPACE = "droot-release"   # ssh-keygen -n: a git or file signature is not a release's
PRINCIPAL = "droot"           # the one identity every trusted key is allowed to sign as
SIGNATURE_SUFFIX = ".sig"     # after the sidecar's name, as ssh-keygen -Y sign writes it
MAX_SIGNATURE = 64 << 10      # an armored RSA-16384 signature is ~3 KB
KEY_TYPE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|"
                      r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)$")
LOGIN_OPTIONS_IGNORED = ("agent-forwarding", "command", "environment", "from", "no-",
                         "permitlisten", "permitopen", "port-forwarding", "principals",
                         "pty", "restrict", "tunnel", "user-rc", "x11-forwarding")
PUSHED = "# droot-pushed "    # the sidecar's second line: when the release was pushed


def checksum_line(digest: str, name: str, pushed: int | None = None) -> bytes:
    """The sidecar's content, and the statement a signature covers: `HEX  NAME\\n`, then
    `# droot-pushed NS\\n` when the push time is known."""
    line = f"{digest}  {name}\n"
    return (line + f"{PUSHED}{pushed}\n" if pushed is not None else line).encode()


def pushed_time(sidecar: str) -> int | None:
    """The push time a sidecar names (None for one written before push times)."""
    for line in sidecar.splitlines():
        if line.startswith(PUSHED):
            return parse_push_time(line[len(PUSHED):].strip())
    return None


def parse_push_time(number: str) -> int | None:
    """A push time in nanoseconds (None unless 1 to 19 digits)."""
    return int(number) if re.fullmatch(r"[0-9]{1,19}", number) else None


def shown_time(pushed: int) -> str:
    """A push time for people: UTC, to the microsecond."""
    from datetime import datetime, timezone
    return datetime.fromtimestamp(pushed // 1000 / 1e6, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def _ssh_keygen(arguments: list[str], message: bytes | None = None) -> subprocess.CompletedProcess:
    """ssh-keygen with `message` on stdin; without one, stdin stays the terminal's (for a
    key's passphrase)."""
    try:
        return subprocess.run(["ssh-keygen", *arguments], input=message, capture_output=True)
    except FileNotFoundError:
        raise DrootError("signed releases need ssh-keygen (apt-get install openssh-client)") \
            from None


def _last_line(output: bytes) -> str:
    lines = output.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else "no reason given"


# --- signing (push) ---------------------------------------------------------------------------

def signing_key_fingerprint(key: str) -> str:
    """`ED25519 SHA256:…` of the key `--sign` names, checked before a push starts (so a
    typo fails at once, not after the upload). Reads the public half only: no passphrase."""
    if not os.path.isfile(key):
        raise UsageError(f"--sign {key}: no such key file")
    result = _ssh_keygen(["-l", "-f", key], b"")
    if result.returncode != 0:
        raise UsageError(f"--sign {key}: not an OpenSSH key ({_last_line(result.stderr)})")
    fields = result.stdout.decode(errors="replace").split()
    return f"{fields[-1].strip('()')} {fields[1]}" if len(fields) >= 3 else "?"


def sign(key: str, digest: str, name: str, pushed: int) -> bytes:
    """The armored signature of the release (digest, name, push time) by `key`: a private
    key file,
    or a public key whose private half ssh-agent holds. A key with a passphrase asks for
    it on the terminal (the message goes through a file, so ssh-keygen's stdin is free)."""
    with tempfile.TemporaryDirectory(prefix="droot-sign-") as directory:
        message = os.path.join(directory, name)
        with open(message, "wb") as out:
            out.write(checksum_line(digest, name, pushed))
        result = _ssh_keygen(["-q", "-Y", "sign", "-f", key, "-n", NAMESPACE, message])
        if result.returncode != 0:
            raise DrootError(f"cannot sign with {key}: {_last_line(result.stderr)}; "
                             "nothing was published")
        with open(message + SIGNATURE_SUFFIX, "rb") as signature:
            return signature.read()


def read_signature_file(path: str) -> bytes:
    """The signature of `--signature FILE` (a file, or a pipe: `<(aws s3 cp … -)`)."""
    try:
        with open(path, "rb") as signature:
            return signature.read(MAX_SIGNATURE)
    except OSError as error:
        raise UsageError(f"--signature {path}: {error.strerror}") from None


# --- trusted keys (pull, deploy) -------------------------------------------------------------

def _split_options(line: str) -> tuple[str, str]:
    """(options, rest) of an authorized_keys line that does not start with a key type:
    the options end at the first blank outside double quotes."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return line[:index], line[index:].lstrip()
    return line, ""


def _options(text: str) -> list[tuple[str, str | None]]:
    """authorized_keys options `a,b="x,y",c` as [(name, value or None)]."""
    found, name, value, quoted, current = [], "", None, False, ""
    for char in text + ",":
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            name, _, value = current.partition("=")
            found.append((name.strip().lower(), value.strip('"') if _ else None))
            current = ""
            continue
        current += char
    return found


def allowed_signers(text: str, where: str) -> str:
    """The `authorized_keys`-form keys in `text` as an allowed-signers file for
    PRINCIPAL; refuses (one line, naming the line) what it cannot take as a key."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        options = ""
        if not KEY_TYPE.match(fields[0]):
            options, rest = _split_options(line)
            fields = rest.split()
        if len(fields) < 2 or not KEY_TYPE.match(fields[0]):
            raise UsageError(f"{where}:{number}: not a public key line (expected "
                             "[OPTIONS] TYPE BASE64 [COMMENT], as in authorized_keys)")
        kept = []
        for name, value in _options(options) if options else []:
            if name == "cert-authority":
                raise UsageError(f"{where}:{number}: cert-authority keys are not supported: "
                                 "list the keys that sign releases themselves")
            if name == "verify-required":
                raise UsageError(f"{where}:{number}: verify-required cannot be enforced on "
                                 "release signatures (ssh-keygen's allowed signers have no "
                                 "such option): remove it to accept this key's signatures "
                                 "without FIDO user verification")
            if name == "expiry-time" and value:
                kept.append(f'valid-before="{value}"')
            elif not name.startswith(LOGIN_OPTIONS_IGNORED) and name != "expiry-time":
                raise UsageError(f"{where}:{number}: unknown key option {name!r}")
        lines.append(" ".join([PRINCIPAL, *([",".join(kept)] if kept else []),
                               fields[0], fields[1]]))
    if not lines:
        raise UsageError(f"{where}: no public keys in it (one a line, as in authorized_keys)")
    return "".join(f"{line}\n" for line in lines)


class TrustedKeys:
    """The keys of `--trusted-keys FILE`, read and checked when the command starts."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, errors="replace") as keys:
                text = keys.read(1 << 20)
        except OSError as error:
            raise UsageError(f"--trusted-keys {path}: {error.strerror}") from None
        self.allowed_signers = allowed_signers(text, path)

    def verify(self, signature: bytes | None, digest: str, name: str, pushed: int | None,
               where: str) -> str:
        """The fingerprint of the trusted key that signed (digest, name, push time) with
        `signature` (the bytes of `where`); one clear DrootError for every other case.
        Whether a push time is recent enough is the deploy's to decide."""
        if signature is None:
            raise DrootError(f"{where} is missing: the release is not signed, and "
                             f"--trusted-keys {self.path} accepts only signed releases")
        if b"-----BEGIN SSH SIGNATURE-----" not in signature[:100]:
            raise DrootError(f"{where} is not an SSH signature (garbage, or empty)")
        message = checksum_line(digest, name, pushed)
        with tempfile.TemporaryDirectory(prefix="droot-verify-") as directory:
            signature_file = os.path.join(directory, "signature")
            signers_file = os.path.join(directory, "allowed_signers")
            with open(signature_file, "wb") as out:
                out.write(signature)
            with open(signers_file, "w") as out:
                out.write(self.allowed_signers)
            # First the signature on its own (its embedded key): is it whole, and of this
            # release? Then whether that key is one of the trusted ones.
            alone = _ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE,
                                 "-s", signature_file], message)
            if alone.returncode != 0:
                reason = _last_line(alone.stderr)
                if "incorrect signature" in reason:
                    when = (f" pushed at {shown_time(pushed)}" if pushed is not None
                            else " with no push time")
                    raise DrootError(f"{where} does not sign sha256 {digest} of {name}{when} "
                                     "(a signature of another release or name, or a replaced "
                                     "checksum or push time): refused")
                raise DrootError(f"{where} is not a valid release signature ({reason})")
            signer = _fingerprint(alone.stdout)
            trusted = _ssh_keygen(["-Y", "verify", "-f", signers_file, "-I", PRINCIPAL,
                                   "-n", NAMESPACE, "-s", signature_file], message)
            if trusted.returncode != 0:
                reason = _last_line(trusted.stderr)
                expired = f" ({reason.partition(': ')[2]})" if "expired" in reason else ""
                raise DrootError(f"{where}: signed by {signer}, which is not a trusted key "
                                 f"in {self.path}{expired}: refused")
            return signer


def _fingerprint(output: bytes) -> str:
    """`ED25519 SHA256:…` from ssh-keygen's `Good "…" signature … with ED25519 key SHA256:…`."""
    match = re.search(r"with (\S+) key (\S+)", output.decode(errors="replace"))
    return f"{match[1]} {match[2]}" if match else "an unknown key"
