"""Extract an archive stream into a new release directory, safely and as a pipeline.

A forked child that has chroot(2)ed into the release directory reads the (compressed)
archive, hashes and decompresses it in one thread and creates the files in another
(members.py), so the costly halves run on two cores. It reads the archive straight from
its file descriptor when there is one (deploy's stdin); a download is fed to it by the
parent through a pipe. The kernel, not path checks in Python, keeps every write inside
the release: the child cannot name anything outside it, whatever the archive's paths and
links say (Docker's chrootarchive does the same). The child is droot's own code, chrooted
to confine paths, not to contain it; so the SHA-256 it reports is trusted like the
parent's. It dies with the parent (PDEATHSIG) and inherits the deploy lock, so no one
starts on the release dir while it still writes.
"""

import errno
import fcntl
import hashlib
import json
import os
import queue
import signal
import threading

from droot.deploy import members
from droot.core.errors import DrootError
from droot.core import compression, kernel
from droot.core.tarformat import TarFormatError, show

PIPE_SIZE = 1 << 20
CHUNK = 1 << 20
F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Extracted:
    """What an extraction read: the SHA-256 of the stream as received (compressed), its
    size and compression, and the counts of what was created."""

    def __init__(self, sha256: str, size: int, compression: str, stats: dict):
        self.sha256 = sha256
        self.size = size
        self.compression = compression
        self.stats = stats


def syncfs(path) -> None:
    """Flush the filesystem holding `path` to disk: one call for a whole release."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        kernel.syncfs(fd)
    except OSError as error:
        raise DrootError(f"cannot sync {path} to disk: {error.strerror}") from None
    finally:
        os.close(fd)


class _Flusher:
    """Writes the release to disk while it is being extracted, with syncfs(2) over and
    over in a thread: the disk then works alongside the CPU, and the final syncfs only
    has the last moment's writes left (it was a third of a deploy on ext4). Its errors
    are left for that final syncfs to report."""

    PAUSE = 0.05  # between two calls, for when there is nothing to write

    def __init__(self, path):
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.wait(self.PAUSE):
            try:
                kernel.syncfs(self._fd)
            except OSError:
                pass  # left for the final syncfs to report

    def stop(self):
        self._done.set()
        self._thread.join()
        os.close(self._fd)


def extract(source, release_dir, *, devices: bool = True, write_back: bool = False,
            progress=None, unpacker=None, plain_tar: bool = False) -> Extracted:
    """Unpack the archive (gzip, zstd or plain tar) read from `source`, a file descriptor
    or a readable stream, into the existing, empty `release_dir`; with `write_back`,
    write it to disk as it goes (the caller still syncs it at the end). `unpacker`, if
    given, makes the Unpacker from the stream's next_chunk function (a delta release's:
    droot.deploy.reuse). With `plain_tar`, the stream is taken as an uncompressed tar,
    never sniffed: a delta release's rebuilt stream starts with its first member's name,
    which the image chooses, and a name spelling a magic number would make the child
    decompress, and extract, another archive than the one planned and checked. Raises
    DrootError if the archive is corrupt, truncated or refused; the caller removes the
    half-filled directory."""
    if isinstance(source, int):
        archive_read, archive_write = source, None
    else:
        archive_read, archive_write = os.pipe()
        try:
            fcntl.fcntl(archive_write, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only costs a few more context switches
    result_read, result_write = os.pipe()
    parent = os.getpid()
    # Ctrl-C or SIGTERM during the fork would otherwise raise in the child before it
    # resets its handlers, or in the parent before it can stop the child: each side
    # receives them only once it is ready.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        raise
    if pid == 0:
        # The parent's ends must not stay open here, or the child never sees end of input.
        if archive_write is not None:
            os.close(archive_write)
        os.close(result_read)
        _child(parent, str(release_dir), archive_read, result_write, devices, unpacker,
               plain_tar)
    child = _Child(pid)
    flusher = read_error = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        os.close(result_write)
        # Started after the fork: a child forked while a thread runs could inherit its locks.
        if write_back:
            flusher = _Flusher(release_dir)
        if archive_write is not None:
            os.close(archive_read)
            try:
                _feed(source, archive_write, progress)
            except BrokenPipeError:
                pass  # the child stopped reading: its own report says why
            except (OSError, EOFError, ValueError) as error:
                read_error = error  # a download that broke off
            finally:
                os.close(archive_write)
        status = child.wait()
    except BaseException:
        child.stop()
        os.close(result_read)
        raise
    finally:
        child.close()
        if flusher:
            flusher.stop()
    report = _read_all(result_read)
    if read_error is not None:
        raise DrootError(f"the archive is corrupt or truncated: {_describe(read_error)}")
    if status == DELTA_MANIFEST_STATUS:
        raise DeltaManifestGiven("a delta release's manifest, not an archive")
    if status == LOCAL_CHANGED_STATUS:
        raise LocalCopyChanged(report.decode(errors="replace"))
    if status != 0:
        message = report.decode(errors="replace").strip() or f"extraction exited with {status}"
        raise DrootError(message)
    result = json.loads(report)
    return Extracted(result["sha256"], result["size"], result["compression"],
                     result["stats"])


def _feed(stream, fd: int, progress):
    while chunk := stream.read(CHUNK):
        if progress:
            progress.update(len(chunk))
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


class _CorruptStream(Exception):
    """The compressed stream ended early, is corrupt, or has data after its end."""


class _DeltaManifestGiven(Exception):
    """The stream is a delta release's manifest, not an archive."""


DELTA_MANIFEST_STATUS = 3  # the extraction child's exit status for _DeltaManifestGiven
LOCAL_CHANGED_STATUS = 4  # ... and for members.LocalChanged


class DeltaManifestGiven(DrootError):
    """extract() was given a delta release's manifest (`droot push --delta` wrote it), which
    only `droot pull` of its store can deploy: its files' data is in the store's packs."""


class LocalCopyChanged(DrootError):
    """A file of this host that a delta release's member was planned from changed or went
    during the extraction (members.LocalChanged)."""


class _HashingReader:
    """Reads the archive from a file descriptor, hashing and counting its bytes."""

    def __init__(self, fd: int):
        self._file = open(fd, "rb", buffering=0, closefd=False)
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n=-1) -> bytes:
        data = self._file.read(n)
        self.hash.update(data)  # lets go of the GIL, like the decompressors
        self.size += len(data)
        return data

    def readinto(self, buffer) -> int:
        # Into the reader's own buffer: read(n) would allocate n bytes per pipe read and
        # shrink them to what arrived, and those odd-sized leftovers fragmented the heap
        # (the extraction child's peak RSS wandered by 30 MB from run to run).
        n = self._file.readinto(buffer)
        self.hash.update(memoryview(buffer)[:n])
        self.size += n
        return n


class _Decompression:
    """Reads, hashes and decompresses the archive in a thread of its own (zstandard,
    ISA-L and hashlib let go of the GIL while they work), queueing the tar bytes in chunks
    for the unpacker. The decompressed stream never crosses a pipe, and the two cores
    share the work: reading and decompression on one, file creation on the other."""

    QUEUED_CHUNKS = 8

    def __init__(self, fd: int, plain_tar: bool = False):
        self.kind = None
        self._plain_tar = plain_tar
        self._queue = queue.Queue(self.QUEUED_CHUNKS)
        self._source = _HashingReader(fd)
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def sha256(self) -> str:
        return self._source.hash.hexdigest()

    @property
    def size(self) -> int:
        return self._source.size

    def _run(self):
        try:
            self.kind, tar = compression.decompressing_reader(self._source, self._plain_tar)
            chunk = tar.read(CHUNK)  # all of CHUNK, or the whole stream: a buffered read
            if (self.kind == "none" and not self._plain_tar
                    and chunk.startswith(compression.DELTA_MANIFEST_PREFIX)):
                raise _DeltaManifestGiven()
            while chunk:
                self._queue.put(chunk)
                chunk = tar.read(CHUNK)
            # The decompressor stops at the end of its stream; what follows is refused.
            if self.kind != "none" and self._source.read(CHUNK):
                raise _CorruptStream("the archive has unexpected data after its end")
            self._queue.put(b"")
        except Exception as error:  # noqa: BLE001 - handed to the unpacking thread
            if not isinstance(error, (_CorruptStream, _DeltaManifestGiven)):
                error = _CorruptStream(f"the archive is corrupt or truncated: "
                                       f"{_describe(error)}")
            self._queue.put(error)

    def next_chunk(self) -> bytes:
        chunk = self._queue.get()
        if isinstance(chunk, Exception):
            raise chunk
        return chunk


def _failure(error: OSError) -> str:
    """The extraction child's one line for a failed system call."""
    name = error.filename.decode(errors="replace") if isinstance(
        error.filename, bytes) else error.filename
    where = f"/{name}: " if name else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):  # the host's, not the archive's
        return (f"the disk is full: {where}{error.strerror} (the new release does not fit "
                "beside the kept ones: free some space); nothing was switched")
    return f"cannot extract the archive: {where}{error.strerror or error}"


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _read_all(fd: int) -> bytes:
    parts = []
    try:
        while data := os.read(fd, 65536):
            parts.append(data)
    finally:
        os.close(fd)
    return b"".join(parts)


class _Child:
    """The extraction child, waited for and stopped through a pidfd (Linux 5.3+): once the
    child is reaped its pidfd names no process, so a Ctrl-C that lands just after the wait
    cannot send SIGKILL to whatever process got the PID next. By PID without pidfds."""

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self.fd = os.pidfd_open(pid)
        except OSError:
            self.fd = -1

    def wait(self) -> int:
        """The child's exit status (-N: killed by signal N), once it has ended."""
        if self.fd < 0:
            return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        info = os.waitid(os.P_PIDFD, self.fd, os.WEXITED)
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def stop(self):
        try:
            if self.fd >= 0:
                signal.pidfd_send_signal(self.fd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.wait()
        except ChildProcessError:  # reaped already: the Ctrl-C landed just after wait()
            pass

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _child(parent: int, release_dir: str, data_read: int, result_write: int, devices: bool,
           unpacker, plain_tar: bool):
    """The extraction process: chroot into the release and unpack. Never returns."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        kernel.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
            os._exit(1)
        os.chroot(release_dir)
        os.chdir("/")
        os.umask(0)
        members.clear_default_acl()
        # Nothing can be imported from here on: the interpreter's files are outside (the
        # decompressors were imported with droot.core.compression).
        try:
            decompression = _Decompression(data_read, plain_tar)
            if unpacker is None:
                stats = members.Unpacker(members.Input(decompression.next_chunk),
                                         devices=devices).run()
            else:
                stats = unpacker(decompression.next_chunk, devices=devices).run()
            report = {"compression": decompression.kind, "sha256": decompression.sha256,
                      "size": decompression.size, "stats": stats.as_dict()}
            os.write(result_write, json.dumps(report).encode())
            status = 0
        except _DeltaManifestGiven:
            status = DELTA_MANIFEST_STATUS
        except members.LocalChanged as error:
            os.write(result_write, f"/{show(error.filename)}: {error.strerror}".encode())
            status = LOCAL_CHANGED_STATUS
        except _CorruptStream as error:
            os.write(result_write, str(error).encode())
        except TarFormatError as error:
            os.write(result_write, f"cannot extract the archive: {error}".encode())
        except OSError as error:
            os.write(result_write, _failure(error).encode())
    except BaseException as error:  # noqa: BLE001 - reported to the parent, never raised
        try:
            os.write(result_write, f"cannot extract the archive: {type(error).__name__}: "
                     f"{error}".encode())
        except BaseException:
            pass
    finally:
        os._exit(status)
