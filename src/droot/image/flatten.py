"""Flatten image layers into one root filesystem stream, as the OCI image spec applies
them: each layer's entries replace the same paths below; `.wh.NAME` deletes NAME (and
all under it) from the layers below; `.wh..wh..opq` in a directory hides everything the
layers below had in it; a non-directory hides whatever the layers below had beneath
its path. Every path that survives is written once, from the layer that wins.

Two passes with bounded memory, nothing buffered or spooled:
1. headers of the layers above the bottom one, top down: for each path, the highest
   layer that mentions it (`top`) and the highest layer that cuts off everything below
   it (`cut`: a whiteout, an opaque marker, a non-directory). About 100-150 bytes per
   entry of those layers; the bottom layer, usually the big one, costs nothing.
2. data of every layer, bottom up: an entry is copied through (header blocks verbatim,
   xattrs and all) unless a higher layer shadows it.
A hardlink whose target a higher layer replaced or deleted must keep the content the
target had: that version is found by reading its layer again (rare: e.g. a package
upgrade replacing one name of a hardlinked file), and the link becomes a regular file
with it. A single-layer image needs neither the first pass nor any of this.
"""

import copy
import gzip
import sys
import tarfile
import zlib

from droot.core.errors import DrootError
from droot.core.releasefiles import DROOT_FILES
from droot.image.tarstream import (OPAQUE_MARKER, WHITEOUT_PREFIX, TarFormatError, TarReader,
                                   header_for, normalise)
from droot.core.tarformat import (BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK, REGULAR_TYPES,
                                  SYMLINK)

# Longest member name and link target taken from a layer: Linux's PATH_MAX (with its
# NUL). No file system path is longer, and it bounds what pass 1 keeps per entry.
MAX_NAME = 4095
SUPPORTED_TYPES = REGULAR_TYPES | {DIRECTORY, SYMLINK, HARDLINK, CHARDEV, BLOCKDEV, FIFO}


class Shadows:
    """What the layers above a given one hide (filled from pass 1)."""

    def __init__(self):
        self.top = {}  # path -> highest layer with an entry or a whiteout for it
        self.cut = {}  # path -> highest layer that hides everything below it from lower layers

    def add(self, entry, layer: int):
        path = entry.path
        directory, _, base = path.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            if base == OPAQUE_MARKER:
                self.cut.setdefault(directory, layer)
            else:
                target = f"{directory}/{base[4:]}" if directory else base[4:]
                self.top.setdefault(target, layer)
                self.cut.setdefault(target, layer)
            return
        self.top.setdefault(path, layer)  # layers are added top down: the first is the highest
        if entry.type != DIRECTORY:
            self.cut.setdefault(path, layer)

    def hidden(self, path: str, layer: int) -> bool:
        """Whether a higher layer than `layer` replaces or removes `path`."""
        if self.top.get(path, -1) > layer:
            return True
        cut = self.cut
        if not cut:
            return False
        if cut.get("", -1) > layer:
            return True
        end = path.rfind("/")
        while end > 0:
            if cut.get(path[:end], -1) > layer:
                return True
            end = path.rfind("/", 0, end)
        return False


class Symlinks:
    """The symlinks written so far (path -> target). A member written beneath one, or of
    the same name after it, or a hard link to a path beneath one, would be extracted
    through it by a tar that follows symlinks, anywhere on the host (the target may be
    absolute or climb with `..`): such an image is refused. A hard link to a symlink is
    written as a copy of the symlink (a tar that links with link(2)'s default would link
    the file the symlink names)."""

    def __init__(self):
        self.targets = {}

    def check(self, path: str, what: str, role: str = ""):
        targets = self.targets
        if not targets:
            return
        if not role and path in targets:  # a layer with two members of one name
            raise DrootError(f"{what}: {path} comes again after a symlink of that name: a "
                             "tar would write through it")
        if (parent := self._above(path)) is not None:
            raise DrootError(f"{what}: {role}{path} lies beneath the symlink {parent} "
                             f"(-> {targets[parent]}): a tar would write through it")

    def through(self, path: str) -> bool:
        """Whether `path` is a symlink written so far, or lies beneath one."""
        return bool(self.targets) and (path in self.targets or
                                       self._above(path) is not None)

    def _above(self, path: str) -> str | None:
        """The nearest of `path`'s parents that is a symlink written so far."""
        end = path.rfind("/")
        while end > 0:
            if (parent := path[:end]) in self.targets:
                return parent
            end = path.rfind("/", 0, end)
        return None


class Carriers:
    """The links written with the content a replaced target had, which later links to
    that content are linked to: found by the target's version ((layer, entry index) of
    its entry) or by its name ((target, the links' layer), until that layer names the
    target again). A link's path is forgotten once anything else is written there, and
    never linked to through a symlink written since: a tar that follows it would link a
    file of the host. Where the content is a symlink, later links are copies of it too:
    what it was is kept (a TarInfo), rather than read again for each link."""

    def __init__(self):
        self._paths = {}  # key -> the carrying link's path
        self._keys = {}   # a carrying link's path -> its keys
        self._copies = {}  # key -> the symlink (TarInfo) its links are copies of

    def find(self, key, symlinks: Symlinks) -> "str | tarfile.TarInfo | None":
        """The path to link to for `key` (a version or a name), the symlink to copy, or
        None: the content is to be carried again."""
        if self._copies and (symlink := self._copies.get(key)) is not None:
            return symlink
        path = self._paths.get(key)
        if path is not None and symlinks.through(path):
            self.forget(path)
            return None
        return path

    def add(self, path: str, key, symlink: tarfile.TarInfo | None = None):
        """The link at `path` carries the content of `key`; if that is `symlink`, later
        links are copies of it, not links to `path`."""
        if symlink is not None:
            self._copies[key] = symlink
            self._paths.pop(key, None)
            return
        self._copies.pop(key, None)
        self._paths[key] = path
        self._keys.setdefault(path, []).append(key)

    def forget(self, path: str):
        """Something else is written at `path`."""
        if self._keys:
            for key in self._keys.pop(path, ()):
                if self._paths.get(key) == path:
                    del self._paths[key]

    def named_again(self, path: str, layer: int):
        """Layer `layer` has an entry for `path`: its links to that name from now on
        are to this entry."""
        if self._paths:
            self._paths.pop((path, layer), None)
        if self._copies:
            self._copies.pop((path, layer), None)


def is_marker(path: str) -> bool:
    return path.rpartition("/")[2].startswith(WHITEOUT_PREFIX)


def flatten(layers, output):
    """Write the merged entries of `layers` (bottom first) to `output` (a TarOutput)."""
    count = len(layers)
    shadows = Shadows()
    progress = output.progress
    for index in range(count - 1, 0, -1):
        if progress is not None:
            progress.note = f"layer {index + 1}/{count}: reading headers"
        with reading(layers[index], verify=False) as reader:
            for entry in reader:
                shadows.add(entry, index)
    carried = Carriers()
    symlinks = Symlinks()
    for index, layer in enumerate(layers):
        if progress is not None:
            progress.note = f"layer {index + 1}/{count}"
        with reading(layer, verify=True) as reader:
            copy_layer(reader, index, layers, shadows, output, carried, symlinks)


def copy_layer(reader, index, layers, shadows, output, carried, symlinks):
    write = output.write
    hidden = shadows.hidden
    for entry in reader:
        path = entry.path
        carried.named_again(path, index)
        if is_marker(path) or path in DROOT_FILES or hidden(path, index):
            continue
        if entry.type not in SUPPORTED_TYPES or entry.parsed.sparse:
            raise TarFormatError(f"{reader.what}: {path}: sparse, multi-volume and other "
                                 f"members of type {bytes([entry.type])!r} are not supported")
        symlinks.check(path, reader.what)
        carried.forget(path)
        header = entry.header if entry.plain else None
        if entry.type == HARDLINK:
            target = normalise(entry.linkname)
            if hidden(target, index):
                carry_link(entry, target, index, layers, shadows, output, carried, symlinks)
                continue
            symlinks.check(target, reader.what, f"{path}: hard link target ")
            if target in symlinks.targets:
                info = entry.tarinfo()
                info.type, info.linkname = tarfile.SYMTYPE, symlinks.targets[target]
                symlinks.targets[path] = info.linkname
                write(header_for(info))
                continue
            if header is None:
                header = entry.rewritten(target)
        elif entry.type == SYMLINK:
            symlinks.targets[path] = entry.linkname
        write(header if header is not None else entry.rewritten())
        reader.copy_data(write)


def carry_link(link, target, index, layers, shadows, output, carried, symlinks):
    """Write `link` (in layer `index`) with the content its target had at that layer,
    now that a higher layer replaced or deleted the target: a regular file (or a copy of
    the symlink, the device node it was), or a link to an earlier link that carries it."""
    key = (target, index)
    info = link.tarinfo()
    carried.forget(link.path)
    carrier = carried.find(key, symlinks)
    if carrier is not None:  # another link to the same file already carries its content
        write_carried(link, info, carrier, output, symlinks)
        return
    symlink = None
    layer_index, before = index, link.index
    while True:
        found = find_version(layers, target, layer_index, before)
        if found is None:
            print(f"droot: warning: {layers[index].name}: hardlink {link.path} to {target}, "
                  "which does not exist there, left out", file=sys.stderr)
            return
        layer_index, before = found
        carrier = carried.find(found, symlinks)
        if carrier is not None:  # a link from another layer already carries this version
            symlink = write_carried(link, info, carrier, output, symlinks)
            break
        with reading(layers[layer_index], verify=False) as reader:
            entry = next(entry for entry in reader if entry.index == before)
            if entry.type != HARDLINK:
                info = entry.tarinfo()
                info.name = link.path
                if entry.type == SYMLINK:  # a copy, as for a link to a symlink that stays
                    symlinks.targets[link.path] = info.linkname
                    symlink = info
                elif entry.type in REGULAR_TYPES or entry.type == DIRECTORY:
                    info.type = tarfile.REGTYPE  # (no directory has a hard link to it)
                output.write(header_for(info))  # or the device node, the FIFO, as it was
                reader.copy_data(output.write)
                carried.add(link.path, found, symlink)
                break
        target = normalise(entry.linkname)  # a link to a link: follow it
        if not shadows.hidden(target, layer_index):
            symlinks.check(target, layers[index].name, f"{link.path}: hard link target ")
            if target in symlinks.targets:
                info.type, info.linkname = tarfile.SYMTYPE, symlinks.targets[target]
                symlinks.targets[link.path] = info.linkname
                symlink = info
            else:
                info.linkname = target  # that file is in the output as it was
            output.write(header_for(info))
            break
    carried.add(link.path, key, symlink)


def write_carried(link, info, carrier, output, symlinks) -> tarfile.TarInfo | None:
    """Write `link` as a hard link to the carrier path, or (a TarInfo) a copy of the
    symlink that carries its content; returns that copy."""
    if isinstance(carrier, str):
        info.linkname = carrier
        output.write(header_for(info))
        return None
    symlink = copy.copy(carrier)
    symlink.name = link.path
    symlinks.targets[link.path] = symlink.linkname
    output.write(header_for(symlink))
    return symlink


def find_version(layers, target: str, index: int, before: int):
    """(layer, entry index) of the version of `target` that a hardlink at position
    `before` of layer `index` refers to, or None if the target did not exist there."""
    for layer_index in range(index, -1, -1):
        found = None
        removed = False
        with reading(layers[layer_index], verify=False) as reader:
            for entry in reader:
                if layer_index == index and entry.index >= before:
                    break
                path = entry.path
                if path == target:
                    found = entry.index
                elif target.startswith(path + "/") or path == "":
                    directory, _, base = path.rpartition("/")
                    if entry.type != DIRECTORY and not base.startswith(WHITEOUT_PREFIX):
                        removed = True  # a non-directory where a parent of the target was
                elif is_marker(path):
                    directory, _, base = path.rpartition("/")
                    gone = f"{directory}/{base[4:]}" if directory else base[4:]
                    if base == OPAQUE_MARKER:
                        removed |= target.startswith(directory + "/") if directory else True
                    else:
                        removed |= target == gone or target.startswith(gone + "/")
        if found is not None:
            return layer_index, found
        if removed:
            return None
    return None


class reading:
    """A TarReader over a layer's uncompressed stream; errors become one clear line.
    With `verify`, or always for a layer that is streamed from a registry (whose every
    read must be checked), the stream is read to its end on leaving, so its digest is."""

    def __init__(self, layer, verify: bool):
        self.layer = layer
        self.verify = verify or layer.streamed

    def __enter__(self):
        try:
            self.stream = self.layer.open(verify=self.verify)
        except OSError as error:
            raise DrootError(f"cannot read {self.layer.name}: {error}") from None
        except Exception as error:
            if (clear := clear_error(error, self.layer)) is not None:
                raise clear from None
            raise
        self.reader = TarReader(self.stream, self.layer.name, MAX_NAME)
        return self.reader

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc is None and self.verify:
                self.reader.drain()
        except Exception as error:
            exc = error
            if clear_error(exc, self.layer) is None:
                raise
        finally:
            self.stream.close()
        if exc is not None and (clear := clear_error(exc, self.layer)) is not None:
            raise clear from None
        return False


def clear_error(error, layer) -> DrootError | None:
    """A failure to read a layer as one clear line (None: not such a failure)."""
    if isinstance(error, TarFormatError):
        return DrootError(str(error))
    if is_decompression_error(error):
        return DrootError(f"{layer.name} is corrupt or truncated ({error})")
    return None


def is_decompression_error(error) -> bool:
    from isal import isal_zlib  # ISA-L's errors (igzip_lib.IsalError) are its own
    return (isinstance(error, (zlib.error, EOFError, gzip.BadGzipFile, isal_zlib.error))
            or type(error).__module__.split(".")[0] in ("zstandard", "isal"))
