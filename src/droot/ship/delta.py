"""Delta releases: a manifest plus packs of per-file zstd frames (docs/ship.md says why).

`push --delta` reads the export's tar stream once. Every member's header blocks go into
the manifest verbatim; a regular file's data is hashed (SHA-256) and, unless the store
already holds that content (found in the manifests of its newest releases), compressed as
one zstd frame into a pack. The manifest records, per file, its digest, size and where
its frame is (pack, offset, length).

`pull` of a manifest rebuilds the archive's tar stream for deploy's extraction child:
every header as pushed, then each file's data, downloaded (frames that follow each other
in a pack come in one ranged GET) and checked against its digest, or, when a release
kept on this host has that path with these bytes, nothing: the child copies (reflinks)
the local file and checks it (droot.deploy.reuse). Same extraction, checks and atomic
switch as an archive's deploy; memory is bounded by one file held for hashing on push
(larger ones spill to a temporary file) and a frame's chunks on pull.

Manifest: MAGIC, a 4-byte length and a JSON object (format version, image, the number of
records, packs), then one zstd frame of records: for each member, `<I` header length,
`<B` kind (0: no data, 1: data), the header blocks, and for kind 1: digest (32 bytes),
`<QHQQ` size, pack index, offset and length of its frame. The last record is the
end-of-archive marker.
"""

import collections
import functools
import hashlib
import io
import json
import os
import struct
import sys
import tempfile
import threading
import time

from droot.core import kernel, signatures
from droot.core.compression import DELTA_MANIFEST_PREFIX
from droot.core.errors import DrootError
from droot.core.indextable import IndexTable
from droot.core.tarformat import (BLOCK, DIRECTORY, HARDLINK, REGULAR_TYPES, SYMLINK,
                                   HeaderReader, TarFormatError, padded)
from droot.ship import deltastore, stores

MAGIC = DELTA_MANIFEST_PREFIX + b"1\n"
FORMAT = 1
PACK_TARGET = 64 << 20        # a pack is closed once it holds this much
SPOOL_LIMIT = 1 << 20         # a file larger than this is hashed from a temporary file
KNOWN_RELEASES = 5            # a push reuses content of the store's newest releases
ZSTD_LEVEL = 3
CHUNK = 1 << 20
_RECORD = struct.Struct("<IB")
_RECORDS_BUFFER = 1 << 16  # bytes of decompressed records read ahead
# One member's headers: a few extended headers, each at most 1 MiB (the tar reader's
# limit), and its own block. A longer record is refused before it is read into memory.
_RECORD_LIMIT = 8 << 20
# A download's range is closed once the plan is this many members past its last frame
# (not to wait for a plan of the whole image while the extraction has nothing to do): a
# next frame after that is another request.
_RUN_LOOKAHEAD = 1024
# Records a manifest may say it has (an image of 4 million files): the pull maps 81
# bytes a record for its plan (droot.deploy.reuse), of which only the pages used become
# memory, and only the planned members' take room in the scratch file.
_RECORDS_LIMIT = 1 << 22
_CONTENT = struct.Struct("<32sQHQQ")
END_OF_ARCHIVE = bytes(2 * BLOCK)


def is_manifest(head: bytes) -> bool:
    return head.startswith(MAGIC)


# --- the manifest ---------------------------------------------------------------------------

class Manifest:
    """A parsed manifest: its JSON head and its records, iterated as often as needed
    (kept compressed: a few MB for tens of thousands of files)."""

    def __init__(self, data, where: str):
        """`data`: the manifest's bytes, or a file holding them, read by position (a
        pull's, which stays on the disk: droot.core.scratch)."""
        self.where = where
        if isinstance(data, bytes):
            self._read_at = lambda size, offset: data[offset:offset + size]
            size = len(data)
        else:
            self._read_at = functools.partial(os.pread, data.fileno())
            size = os.fstat(data.fileno()).st_size
        start = len(MAGIC) + 4
        fixed = self._read_at(start, 0)
        if not fixed.startswith(MAGIC) or len(fixed) < start:
            raise DrootError(f"{where}: not a droot delta manifest")
        (length,) = struct.unpack_from("<I", fixed, len(MAGIC))
        try:
            if length > size - start:  # not read: pread would make room for all it says
                raise ValueError("head length")
            self.head = json.loads(self._read_at(length, start))
            self.packs = [deltastore.check_pack_name(name) for name in self.head["packs"]]
            if self.head["format"] != FORMAT:
                raise DrootError(f"{where}: manifest format {self.head['format']} is newer "
                                 "than this droot reads (upgrade droot)")
            self._record_count = self.head.get("records")  # None: pushed before it was said
            if "records" in self.head and not (
                    type(self._record_count) is int and 0 < self._record_count <= _RECORDS_LIMIT):
                raise ValueError("record count")
        except (ValueError, KeyError, TypeError):
            raise DrootError(f"{where}: corrupt manifest (its head)") from None
        self._records_start = start + length

    def record_count(self) -> int:
        """How many records the manifest has, as its head says (counted if it does not)."""
        if self._record_count is None:
            self._record_count = sum(1 for _ in self.records())
        return self._record_count

    def records(self):
        """(header bytes, content or None) per member, the end marker last; content is
        (digest, size, pack name, offset, length)."""
        import zstandard
        # Buffered: a record is read in three small pieces, each a call into zstd otherwise.
        reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(
            _Positioned(self._read_at, self._records_start)), _RECORDS_BUFFER)
        try:
            while True:
                fixed = _read_exactly(reader, _RECORD.size, self.where, allow_end=True)
                if not fixed:
                    return
                length, kind = _RECORD.unpack(fixed)
                if length > _RECORD_LIMIT or kind not in (0, 1):
                    raise DrootError(f"{self.where}: corrupt manifest (a record)")
                header = _read_exactly(reader, length, self.where)
                content = None
                if kind:
                    digest, size, pack, offset, frame = _CONTENT.unpack(
                        _read_exactly(reader, _CONTENT.size, self.where))
                    if pack >= len(self.packs):
                        raise DrootError(f"{self.where}: corrupt manifest (pack index)")
                    content = (digest, size, self.packs[pack], offset, frame)
                yield header, content
        except zstandard.ZstdError as error:
            raise DrootError(f"{self.where}: corrupt manifest ({error})") from None


class _Positioned:
    """Bytes from `offset` on, for a reader: read_at(size, offset) gives them."""

    def __init__(self, read_at, offset: int):
        self._read_at, self._offset = read_at, offset

    def read(self, size: int = -1) -> bytes:
        data = self._read_at(size if size >= 0 else CHUNK, self._offset)
        self._offset += len(data)
        return data


def _read_exactly(reader, n: int, where: str, allow_end: bool = False) -> bytes:
    parts, got = [], 0
    while got < n:
        data = reader.read(n - got)
        if not data:
            if allow_end and got == 0:
                return b""
            raise DrootError(f"{where}: corrupt manifest (truncated)")
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class _ManifestWriter:
    def __init__(self):
        import zstandard
        self._buffer = io.BytesIO()
        self._writer = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(
            self._buffer, closefd=False)
        self.packs: list[str] = []
        self._pack_index: dict[str, int] = {}
        self._records = 0

    def add(self, header: bytes, content=None):
        self._records += 1
        self._writer.write(_RECORD.pack(len(header), 1 if content else 0))
        self._writer.write(header)
        if content:
            digest, size, pack, offset, length = content
            index = self._pack_index.get(pack)
            if index is None:
                index = self._pack_index[pack] = len(self.packs)
                self.packs.append(pack)
            self._writer.write(_CONTENT.pack(digest, size, index, offset, length))

    def finish(self, head: dict) -> bytes:
        self._writer.close()
        encoded = json.dumps({"format": FORMAT, **head, "records": self._records,
                              "packs": self.packs}).encode()
        return MAGIC + struct.pack("<I", len(encoded)) + encoded + self._buffer.getvalue()


# --- push -----------------------------------------------------------------------------------

class _Packer:
    """Frames into packs: the current pack's upload streams (multipart on S3)."""

    def __init__(self, store):
        self.store = store
        self.upload = None
        self.name = None
        self.size = 0
        self.hash = None
        self.uploaded = 0

    def add(self, frame) -> tuple[str, int, int]:
        """Append one frame, given as the pieces it is compressed into; returns (pack,
        offset, length)."""
        if self.upload is None:
            self.name = deltastore.new_pack_name()
            self.upload = self.store.upload(f"{deltastore.PACKS}/{self.name}")
            self.size = 0
            self.hash = hashlib.sha256()
        offset = self.size
        for piece in frame:
            self.upload.write(piece)
            self.hash.update(piece)
            self.size += len(piece)
        length = self.size - offset
        self.uploaded += length
        name = self.name
        if self.size >= PACK_TARGET:
            self.close()
        return name, offset, length

    def close(self):
        if self.upload is not None:
            self.upload.commit(self.hash.hexdigest())
            self.upload = None

    def abort(self):
        if self.upload is not None:
            self.upload.abort()
            self.upload = None


class _KnownContent:
    """Where each content the store holds is: known[digest] is (size, pack, offset,
    length). Kept packed, 60 bytes a content (the digest, then the size, the pack's index
    in `packs`, offset and length), found through an IndexTable: a dict of bytes held
    ~230 bytes a content (23 MB for a push of 100,000 new files), a tuple of four ints
    ~170 more."""

    _ENTRY = struct.Struct("<32sQIQQ")

    def __init__(self):
        self._entries = bytearray()
        self._index = IndexTable(self._holds)
        self.packs: list[str] = []
        self._pack_index: dict[str, int] = {}

    def _holds(self, number: int, digest: bytes) -> bool:
        return self._entries.startswith(digest, number * self._ENTRY.size)

    def __contains__(self, digest: bytes) -> bool:
        return self._index.find(digest) >= 0

    def __getitem__(self, digest: bytes) -> tuple[int, str, int, int]:
        number = self._index.find(digest)
        if number < 0:
            raise KeyError(digest)
        _, size, pack, offset, length = self._ENTRY.unpack_from(
            self._entries, number * self._ENTRY.size)
        return size, self.packs[pack], offset, length

    def add(self, digest: bytes, size: int, pack: str, offset: int, length: int):
        """Where `digest` is, unless it is known already (the first place stays)."""
        if pack not in self._pack_index:
            self._pack_index[pack] = len(self.packs)
            self.packs.append(pack)
        self._add(digest, size, self._pack_index[pack], offset, length)

    def _add(self, digest: bytes, size: int, pack: int, offset: int, length: int):
        if self._index.put(digest, len(self._entries) // self._ENTRY.size, replace=False) < 0:
            self._entries += self._ENTRY.pack(digest, size, pack, offset, length)

    def forget_packs(self, gone: set[str]):
        """Forget the contents of the packs `gone`."""
        indexes = {self._pack_index[pack] for pack in gone}
        entries, self._entries = self._entries, bytearray()
        self._index = IndexTable(self._holds)
        for digest, size, pack, offset, length in self._ENTRY.iter_unpack(entries):
            if pack not in indexes:
                self._add(digest, size, pack, offset, length)


def known_content(store) -> _KnownContent:
    """Where the contents the newest releases of the store reference are."""
    known = _KnownContent()
    for marker, name in deltastore.releases_newest_first(store, KNOWN_RELEASES):
        if name is None:
            continue
        try:
            data = store.read(name)
        except DrootError:
            continue  # a release removed since: its content is not counted on
        if hashlib.sha256(data).hexdigest() != marker.rpartition("/")[2]:
            continue  # replaced since the marker was written: not trusted for reuse
        manifest = Manifest(data, name)
        for _, content in manifest.records():
            if content:
                known.add(*content)
    return known


def push(source: str, dest: str, *, plain_http: bool = False,
         sign_key: str | None = None) -> dict:
    """Export `source` as a delta release at `dest` (s3://BUCKET/KEY or a path); with
    `sign_key`, the manifest's checksum line is signed as an archive's is (the packs are
    bound to it by the digests the manifest holds)."""
    import zstandard
    from droot.image.export import export_image
    kernel.map_large_allocations()  # upload parts and manifests, not kept in the heap
    location = stores.parse(dest)
    store = deltastore.open_store(location)
    signer = signatures.signing_key_fingerprint(sign_key) if sign_key else None
    known = known_content(store)
    gone = set()
    for pack in sorted(known.packs):  # re-marked: a concurrent gc spares them (deltagc)
        try:
            store.touch(f"{deltastore.PACKS}/{pack}")
        except deltastore.Missing:  # removed by a gc since: its content goes up again
            gone.add(pack)
    if gone:
        known.forget_packs(gone)
    read_fd, write_fd = os.pipe()
    exported: dict = {}

    def export():
        try:
            with open(write_fd, "wb", buffering=CHUNK) as out:
                exported["info"] = export_image(source, out, plain_http=plain_http)
        except BaseException as error:  # noqa: BLE001 - reported by the reading thread
            exported["error"] = error

    thread = threading.Thread(target=export, daemon=True)
    thread.start()
    packer = _Packer(store)
    manifest = _ManifestWriter()
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    stats = {"files": 0, "new_files": 0, "bytes": 0, "new_bytes": 0}
    try:
        with open(read_fd, "rb", buffering=CHUNK) as tar:
            headers = HeaderReader(tar.read)
            try:
                while (member := headers.next()) is not None:
                    header = b"".join(member.blocks)
                    if not member.data_size:
                        manifest.add(header)
                        continue
                    if member.type not in REGULAR_TYPES:  # sparse: deploy refuses it too
                        raise DrootError(f"push --delta: {member.path!r} is a kind of member "
                                         "delta releases do not carry")
                    digest, data = _read_file(tar, member.data_size)
                    stats["files"] += 1
                    stats["bytes"] += member.data_size
                    if digest not in known:
                        pack, offset, length = packer.add(
                            _frame(compressor, data, member.data_size))
                        known.add(digest, member.data_size, pack, offset, length)
                        stats["new_files"] += 1
                        stats["new_bytes"] += member.data_size
                    size, pack, offset, length = known[digest]
                    manifest.add(header, (digest, size, pack, offset, length))
            except TarFormatError as error:
                if "error" not in exported:
                    raise DrootError(f"push --delta: the export is not a tar stream: "
                                     f"{error}") from None
            while tar.read(CHUNK):
                pass
        thread.join()
        if "error" in exported:
            raise exported["error"]
        manifest.add(END_OF_ARCHIVE)
        packer.close()
        data = manifest.finish({"image": exported["info"]})
        digest = hashlib.sha256(data).hexdigest()
        pushed = time.time_ns()  # in the marker, and in a signed sidecar (as push's)
        # Signed before the manifest is written: a key that cannot sign publishes nothing
        # (the packs written so far are garbage for gc).
        signature = (signatures.sign(sign_key, digest, store.release_name, pushed)
                     if sign_key else None)
        upload = store.upload(store.release_name)
        try:
            upload.write(data)
            upload.commit(digest, signature, pushed if sign_key else None)
        except BaseException:
            upload.abort()
            raise
        store.put(f"{deltastore.RELEASES}/{digest}",
                  deltastore.marker_body(store.release_name, pushed))
    except BaseException:
        packer.abort()
        raise
    return {"sha256": digest, "size": len(data), "uploaded": packer.uploaded,
            "image": exported.get("info"), "signer": signer, **stats}


def _frame(compressor, data, size: int):
    """One zstd frame of a file's data (bytes, or a spooled file read a chunk at a time:
    a large file is never held whole in memory, nor its frame)."""
    if isinstance(data, bytes):
        yield compressor.compress(data)
        return
    stream = compressor.compressobj(size=size)
    with data:
        while chunk := data.read(CHUNK):
            if piece := stream.compress(chunk):
                yield piece
    yield stream.flush()


def _read_file(tar, size: int):
    """(SHA-256, data) of the next `size` bytes and their padding; data is bytes, or a
    temporary file positioned at 0 when larger than SPOOL_LIMIT."""
    digest = hashlib.sha256()
    if size <= SPOOL_LIMIT:
        data = tar.read(size)
        if len(data) != size:
            raise DrootError("push --delta: the export ended inside a file")
        digest.update(data)
        tar.read(padded(size) - size)
        return digest.digest(), data
    spool = tempfile.TemporaryFile()
    left = size
    while left:
        chunk = tar.read(min(CHUNK, left))
        if not chunk:
            raise DrootError("push --delta: the export ended inside a file")
        digest.update(chunk)
        spool.write(chunk)
        left -= len(chunk)
    tar.read(padded(size) - size)
    spool.seek(0)
    return digest.digest(), spool


# --- pull -----------------------------------------------------------------------------------

class _RecordHeaders:
    """Reads the records' header bytes as one stream, for HeaderReader; `current` is the
    record whose header was read last."""

    def __init__(self, records):
        self._records = records
        self._data = memoryview(b"")
        self.current = None
        self.count = 0  # records read so far

    def at_last_record(self) -> bool:
        return next(self._records, None) is None

    def rest(self) -> int:
        """How many bytes of the current record are still unread."""
        return len(self._data)

    def read(self, n: int) -> bytes:
        if not self._data:
            record = next(self._records, None)
            if record is None:
                return b""
            self.current = record
            self.count += 1
            self._data = memoryview(record[0])
        data = bytes(self._data[:n])
        self._data = self._data[n:]
        return data


class _Planner:
    """The plan of a delta pull: member by member, what comes from this host (local.find)
    and what is downloaded. Made just ahead of the stream the extraction child reads
    (_ReleaseStream), so the child extracts while the parent plans; `runs` are the
    downloads planned and not yet made, as [pack, start, end) of adjacent frames."""

    def __init__(self, manifest: Manifest, local):
        self.runs = collections.deque()
        self.planned = 0  # how many members are planned
        self._last_download = 0  # the last member planned to be downloaded
        self._steps = self._plan(manifest, local)

    def plan_through(self, index: int):
        """Plan the members up to member `index`, or all of them."""
        while self.planned <= index and next(self._steps, None):
            pass

    def next_run(self) -> list:
        """The next download, once no later member can make it longer, or none within
        _RUN_LOOKAHEAD members (the stream, and the child, wait for this plan)."""
        while (len(self.runs) < 2 and self.planned - self._last_download <= _RUN_LOOKAHEAD
               and next(self._steps, None)):
            pass
        return self.runs.popleft()

    def _plan(self, manifest: Manifest, local):
        """Plans one member a step, and checks the manifest's records as it goes."""
        local.begin_plan()
        source = _RecordHeaders(manifest.records())
        headers = HeaderReader(source.read)
        runs = self.runs
        # The directories that members so far were made in, and the symlinks (and hard
        # links, which may be symlinks), as tables of a member each names (on the disk,
        # as the plan's: droot.core.scratch).
        parents = IndexTable(lambda number, key: _directory(local.path(number)) == key,
                             scratch=local.scratch)
        links = IndexTable(lambda number, path: local.path(number) == path,
                           scratch=local.scratch)
        any_links = False
        try:
            while (member := headers.next()) is not None:
                # The stream is rebuilt record by record and extracted member by member: a
                # record holding two members' headers, or a member's headers spread over
                # two records, would hand a file the bytes meant for another, never checked.
                if source.rest() or source.count != member.index + 1:
                    raise DrootError(f"{manifest.where}: corrupt manifest (a record that is "
                                     "not one member's headers)")
                if member.index + 1 >= local.members:  # the end marker's record comes last
                    raise DrootError(f"{manifest.where}: corrupt manifest (more records than "
                                     "its head says)")
                content = source.current[1]
                local.note_path(member.index, member.path)
                if any_links and not local.aliased and _named_through(member.path, links):
                    # `e -> .`, then `e/b`: a member may replace a file that is named by
                    # another path here, so no path is known to hold what its member said.
                    local.aliased = True
                if member.type in (SYMLINK, HARDLINK):
                    links.put(member.path, member.index, replace=False)
                    any_links = True
                if (member.type != DIRECTORY and not local.aliased
                        and parents.find(member.path) >= 0):
                    # It replaces a directory, and what was below it goes too (`d/a`, then
                    # a file `d`): as above, no path is known to hold what its member said.
                    # (Not forgotten path by path: a manifest doing this over and over
                    # would make the plan quadratic.)
                    local.aliased = True
                # The member's own directory, not every ancestor: a manifest of deep,
                # distinct paths would make that megabytes a member. An export has a
                # member for each directory, so every ancestor is some member's own
                # directory.
                if (directory := _directory(member.path)):
                    parents.put(directory, member.index, replace=False)
                if member.type in REGULAR_TYPES and member.data_size:
                    if content is None or content[1] != member.data_size:
                        raise DrootError(f"{manifest.where}: corrupt manifest (no content "
                                         "for a file, or not its size)")
                elif content is not None:
                    raise DrootError(f"{manifest.where}: corrupt manifest (content for a "
                                     "member without data)")
                local.note_member(member.index, member.path, content and content[0])
                self.planned = member.index + 1
                if content is None:
                    yield True
                    continue
                digest, size, pack, offset, length = content
                if not local.aliased:  # a content the release holds twice is downloaded once
                    first = local.first_with(member.index, digest)
                    if first != member.index:
                        local.same_as(member.index, first)
                        yield True
                        continue
                if not local.find(member.index, member.path, size, digest):
                    if runs and runs[-1][0] == pack and runs[-1][2] == offset:
                        runs[-1][2] = offset + length
                    else:
                        runs.append([pack, offset, offset + length])
                    self._last_download = member.index
                yield True
            if not source.at_last_record():  # the extraction would never see them
                raise DrootError(f"{manifest.where}: corrupt manifest (records after the "
                                 "end of the archive)")
        except TarFormatError as error:
            raise DrootError(f"{manifest.where}: corrupt manifest ({error})") from None
        finally:
            parents.close()
            links.close()
        local.end_plan()


def _directory(path: bytes) -> bytes:
    """The directory member `path` is in (b"": the release's top)."""
    return path[:max(path.rfind(b"/"), 0)]


def _named_through(path: bytes, links: IndexTable) -> bool:
    """Whether a parent directory of member `path` is one of the paths in `links`."""
    end = path.find(b"/")
    while end != -1:
        if links.find(path[:end]) >= 0:
            return True
        end = path.find(b"/", end + 1)
    return False


class _ReleaseStream:
    """The tar stream the extraction child reads: the manifest's headers, and the data of
    the files not taken from this host, downloaded and verified. Each member is planned
    (_Planner) before its header goes out."""

    def __init__(self, manifest: Manifest, local, store):
        self._chunks = self._generate(manifest, local, store)

    def read(self, n=-1) -> bytes:
        return next(self._chunks, b"")

    def _generate(self, manifest, local, store):
        import zstandard
        planner = _Planner(manifest, local)
        body, left = None, 0
        decompressor = zstandard.ZstdDecompressor()  # its context serves every frame
        # Headers go out in batches: one pipe write (and one read in the child) for many
        # members whose data comes from this host, not one per member.
        headers, batched = [], 0
        try:
            for index, (header, content) in enumerate(manifest.records()):
                planner.plan_through(index)  # the end marker's: all, and every check
                headers.append(header)
                batched += len(header)
                if content is None or local.planned(index):
                    if batched >= CHUNK:
                        yield b"".join(headers)
                        headers, batched = [], 0
                    continue
                yield b"".join(headers)
                headers, batched = [], 0
                digest, size, pack, offset, length = content
                if left == 0:
                    if body:
                        body.close()
                    run = planner.next_run()
                    body = store.read_range(f"{deltastore.PACKS}/{run[0]}", run[1], run[2])
                    left = run[2] - run[1]
                left -= length
                frame = _Frame(body, length, pack)
                # Output a chunk at a time: a frame of zeros is ~30,000 times smaller than
                # its content, which one call would make at once (or a hostile store's
                # frame of terabytes).
                reader = decompressor.stream_reader(frame, read_size=CHUNK,
                                                    read_across_frames=False)
                check = hashlib.sha256()
                produced = 0
                try:
                    while data := reader.read(CHUNK):
                        produced += len(data)
                        if produced > size:
                            break
                        check.update(data)
                        yield data
                except zstandard.ZstdError as error:
                    raise DrootError(f"pack {pack}: corrupt frame at {offset}: "
                                     f"{error}") from None
                # Its bytes all read, or the next frame would start at the wrong place.
                if produced != size or check.digest() != digest or frame.left:
                    raise DrootError(f"pack {pack}: the frame at {offset} does not hold the "
                                     f"content the manifest names (corrupt store); nothing "
                                     "was switched")
                if size % BLOCK:
                    yield bytes(BLOCK - size % BLOCK)
            if headers:
                yield b"".join(headers)
        finally:
            if body:
                body.close()


class _Frame:
    """The `length` bytes of one frame of a pack, read from the run's `body`."""

    def __init__(self, body, length: int, pack: str):
        self._body, self.left, self._pack = body, length, pack

    def read(self, n: int) -> bytes:
        if not self.left:
            return b""
        data = self._body.read(min(n, self.left))
        if not data:
            raise DrootError(f"pack {self._pack}: truncated (the store lost data?)")
        self.left -= len(data)
        return data


def pull(location: stores.Location, spooled, expected_sha256: str | None, root,
         client=None, **deploy_options) -> dict:
    """Deploy the delta release whose manifest is in the file `spooled` at `root`
    (`client`: the S3 client that downloaded it, for the packs too)."""
    from droot.deploy.deploy import deploy
    from droot.deploy.pipeline import LocalCopyChanged
    from droot.deploy.releases import Layout
    from droot.deploy.reuse import LocalContent, ReusingUnpacker
    kernel.map_large_allocations()  # the manifest and downloaded frames, not kept in the heap
    shown = stores.redact(location.text)
    digest = hashlib.file_digest(spooled, "sha256").hexdigest()
    if expected_sha256 and digest != expected_sha256.lower():
        raise DrootError(f"checksum mismatch: the manifest's SHA-256 is {digest}, expected "
                         f"{expected_sha256.lower()} (corrupt download, or replaced while "
                         "it was read; nothing was switched)")
    manifest = Manifest(spooled, shown)
    store = deltastore.open_store(location, client=client)
    layout = Layout(root)
    current = layout.current()
    names = [release.name for release in reversed(layout.releases())]
    if current in names:  # the current release first: the likeliest to match
        names.remove(current)
        names.insert(0, current)
    for use_record in (True, False):
        local = LocalContent(layout.releases_dir, names[:KNOWN_RELEASES],
                             manifest.record_count(),
                             link=deploy_options.get("read_only", False),
                             use_record=use_record)
        try:
            summary = deploy(_ReleaseStream(manifest, local, store), root,
                             expected_sha256=None, release_sha256=digest,
                             unpacker=functools.partial(ReusingUnpacker, local=local),
                             content_record=local, plain_tar=True, **deploy_options)
            break
        except LocalCopyChanged as error:
            # A kept release's file planned from the record is not what it recorded (a
            # host-side change): once more, reading every file it would reuse.
            message = f"a file of a kept release changed: {error}"
            if not use_record:
                raise DrootError(f"{message}; nothing was switched (pull again)") from None
            print(f"droot: warning: {message}: pulling again, reading the kept releases' "
                  "files", file=sys.stderr)
        finally:
            local.close()
    summary.update(compression="delta", reused_files=local.reused_files,
                   reused_bytes=local.reused_bytes,
                   downloaded=store.downloaded + os.fstat(spooled.fileno()).st_size,
                   requests=store.requests + 2)  # + the manifest and its sidecar
    linked = f" ({summary['linked']} hard-linked)" if summary.get("linked") else ""
    print(f"droot: delta: {local.reused_files} files ({local.reused_bytes} bytes) reused "
          f"from this host{linked}, {summary['downloaded']} bytes downloaded in "
          f"{summary['requests']} requests", file=sys.stderr)
    return summary
