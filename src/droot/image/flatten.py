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
target had: that version is found by reading layers again (e.g. a package upgrade
replacing one name of a hardlinked file), in batches of links (carry_links), and the
link becomes a regular file with it. A single-layer image needs neither the first pass
nor any of this.
"""

import bisect
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
        end = path.rfind("/")
        while end > 0:
            parent = path[:end]
            if parent in targets:
                raise DrootError(f"{what}: {role}{path} lies beneath the symlink {parent} "
                                 f"(-> {targets[parent]}): a tar would write through it")
            end = path.rfind("/", 0, end)


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
    batch = Batch()  # hard links whose target a higher layer replaced: carried in batches

    def flush():
        nonlocal batch
        if batch.links:
            carry_links(batch.links, layers, shadows, output, carried, symlinks)
            batch = Batch()

    for entry in reader:
        path = entry.path
        if is_marker(path) or path in DROOT_FILES or hidden(path, index):
            continue
        if entry.type not in SUPPORTED_TYPES or entry.parsed.sparse:
            raise TarFormatError(f"{reader.what}: {path}: sparse, multi-volume and other "
                                 f"members of type {bytes([entry.type])!r} are not supported")
        if batch.links and batch.meets(path):  # the links waiting come first, as they came
            flush()
        symlinks.check(path, reader.what)
        carried.forget(path)
        header = entry.header if entry.plain else None
        if entry.type == HARDLINK:
            target = normalise(entry.linkname)
            if hidden(target, index):
                batch.add(CarriedLink(entry, target, index))
                if len(batch.links) == CARRY_BATCH:
                    flush()
                continue
            if batch.links and batch.holds(target):  # a link to one waiting
                flush()
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
    flush()


def at_or_beneath(path: str, paths) -> bool:
    """Whether `path` is one of `paths` or lies beneath one."""
    if not paths:
        return False
    if path in paths:
        return True
    end = path.rfind("/")
    while end > 0:
        if path[:end] in paths:
            return True
        end = path.rfind("/", 0, end)
    return False


class Batch:
    """Carried links waiting to be written at the end of their batch. What a later entry
    of the layer does to one of their paths (the same path again, one beneath it, one of
    its parents, a hard link to it) must follow it: the batch is written first. So the
    paths of one batch are neither the same nor one beneath another, and their order
    among themselves does not change what an extractor makes of them."""

    def __init__(self):
        self.links = []
        self.paths = set()
        self.parents = set()  # the parents of those paths

    def holds(self, path: str) -> bool:
        """Whether `path` is one of the paths or lies beneath one."""
        return at_or_beneath(path, self.paths)

    def meets(self, path: str) -> bool:
        return path in self.parents or at_or_beneath(path, self.paths)

    def add(self, link):
        self.links.append(link)
        path = link.path
        self.paths.add(path)
        end = path.rfind("/")
        while end > 0:
            self.parents.add(path[:end])
            end = path.rfind("/", 0, end)


# A hard link whose target a higher layer replaced needs the content the target had: its
# version is found, then copied, by reading layers again. Links are carried in batches
# (of at most this many, each keeping its header) that read each layer at most twice a
# round, where each link read one or two: thousands of them took hours.
CARRY_BATCH = 1024


class Carriers:
    """The links written with a replaced target's content: (layer, entry index) of that
    version -> the link's path, which later links to the version are linked to. Forgotten
    once something else is written at that path (a later link must not be linked to
    whatever took the name: a symlink there, to a host file)."""

    def __init__(self):
        self._paths, self._versions = {}, {}

    def get(self, version) -> str | None:
        return self._paths.get(version)

    def add(self, version, path: str):
        self.forget(path)
        self._paths[version], self._versions[path] = path, version

    def forget(self, path: str):
        if self._versions:
            version = self._versions.pop(path, None)
            if version is not None:
                del self._paths[version]


class CarriedLink:
    """A hard link of layer `layer` being written with the content its target had there
    (`target`: the path of the version looked for, last before entry `before` of layer
    `at`; a link to a link moves them down)."""

    __slots__ = ("info", "path", "layer", "target", "at", "before")

    def __init__(self, link, target: str, layer: int):
        self.info = link.tarinfo()
        self.path, self.layer = link.path, layer
        self.target, self.at, self.before = target, layer, link.index


def carry_links(links, layers, shadows, output, carried, symlinks):
    """Write each of `links` as a regular file with its target's content, or as a link to
    another link that carries it (or to the file a chain of links leads to)."""
    write = output.write
    unwritten = {link.path for link in links}  # of this batch, neither written nor left out
    waiting = []  # links to a path of `unwritten`: written after it, as they came

    def writing(link):
        # Written later than it came, so checked again against the symlinks since.
        symlinks.check(link.path, layers[link.layer].name)
        unwritten.discard(link.path)
        carried.forget(link.path)

    def write_link(link, linkname: str):
        writing(link)
        info = link.info
        info.linkname = linkname
        write(header_for(info))

    def link_to(link, target: str) -> None:
        """Write `link` as a link to `target`, a file in the output as it was."""
        if at_or_beneath(target, unwritten):
            waiting.append(link)
            return
        symlinks.check(target, layers[link.layer].name, f"{link.path}: hard link target ")
        if target in symlinks.targets:
            writing(link)
            info = link.info
            info.type, info.linkname = tarfile.SYMTYPE, symlinks.targets[target]
            symlinks.targets[link.path] = info.linkname
            write(header_for(info))
        else:
            write_link(link, target)

    work = links
    while work:
        wanted = {}  # layer -> entry index -> the links that carry that version
        for link, version in zip(work, find_versions(layers, work)):
            if version is None:
                print(f"droot: warning: {layers[link.layer].name}: hardlink {link.path} to "
                      f"{link.target}, which does not exist there, left out", file=sys.stderr)
                unwritten.discard(link.path)
            elif carried.get(version) is not None:  # an earlier link carries that content
                write_link(link, carried.get(version))
            else:
                wanted.setdefault(version[0], {}).setdefault(version[1], []).append(link)
        work = []
        for layer_index in sorted(wanted):
            versions = wanted[layer_index]
            last = max(versions)
            with reading(layers[layer_index], verify=False) as reader:
                for entry in reader:
                    if entry.index > last:
                        break
                    for link in versions.get(entry.index, ()):
                        if carry_one(link, entry, layer_index, reader, shadows, output,
                                     carried, symlinks, writing, write_link, link_to):
                            work.append(link)  # a link to a link: its target next
    if waiting:
        order = {id(link): position for position, link in enumerate(links)}
        waiting.sort(key=lambda link: order[id(link)])
        unwritten.clear()  # what is still to come came after them: as before
        for link in waiting:
            link_to(link, link.target)


def carry_one(link, entry, layer_index, reader, shadows, output, carried, symlinks,
              writing, write_link, link_to) -> bool:
    """Write `link` from `entry`, the version of its target in layer `layer_index`; True
    if that version is itself a link whose target a higher layer replaced."""
    version = (layer_index, entry.index)
    if carried.get(version) is not None:  # an earlier link of this batch carries it
        write_link(link, carried.get(version))
        return False
    if entry.type != HARDLINK:
        writing(link)
        info = entry.tarinfo()
        info.name = link.path
        if entry.type == SYMLINK:  # a copy of it, as for a link to a symlink that stays
            symlinks.targets[link.path] = info.linkname  # (no link to it: a copy each)
            output.write(header_for(info))
            return False
        if entry.type in REGULAR_TYPES:
            info.type = tarfile.REGTYPE
        output.write(header_for(info))  # or the device node, the FIFO, as it was
        reader.copy_data(output.write)
        carried.add(version, link.path)
        return False
    target = normalise(entry.linkname)  # a link to a link: follow it
    if shadows.hidden(target, layer_index):
        link.target, link.at, link.before = target, layer_index, entry.index
        return True
    link.target = target
    link_to(link, target)  # that file is in the output as it was
    return False


def find_versions(layers, links) -> list:
    """For each of `links`, (layer, entry index) of the version of its target it refers
    to, or None if the target did not exist there. Each layer is read once, top down."""
    versions = [None] * len(links)
    searching = set(range(len(links)))
    for layer_index in range(max(link.at for link in links), -1, -1):
        here = sorted(n for n in searching if links[n].at >= layer_index)
        if not here:
            continue
        found, removed = scan_layer(layers[layer_index], layer_index, [links[n] for n in here])
        for position, n in enumerate(here):
            if position in found:
                versions[n] = (layer_index, found[position])
                searching.discard(n)
            elif position in removed:
                searching.discard(n)
        if not searching:
            break
    return versions


def scan_layer(layer, layer_index: int, links) -> tuple[dict, set]:
    """In one read of `layer`: for the links' targets, the last entry of each (of those
    before a link in its own layer), and which of them the layer removes (a
    non-directory at a parent, a whiteout, an opaque marker above). Returns {position in
    `links`: entry index} and {positions}."""
    by_target = {}
    for position, link in enumerate(links):
        by_target.setdefault(link.target, []).append(position)
    targets = sorted(by_target)  # those below a path are a run of them

    def counts(position, entry) -> bool:
        link = links[position]
        return link.at != layer_index or entry.index < link.before

    def below(prefix: str, but: str | None = None):
        """The positions of the targets below `prefix` ("" for all), but not below `but`."""
        for n in range(bisect.bisect_left(targets, prefix), len(targets)):
            target = targets[n]  # (not a slice: a copy of the rest, for every entry)
            if not target.startswith(prefix):
                break
            if but is None or not target.startswith(but):
                yield from by_target[target]

    found, removed = {}, set()
    with reading(layer, verify=False) as reader:
        for entry in reader:
            path = entry.path
            for position in by_target.get(path, ()):
                if counts(position, entry):
                    found[position] = entry.index
            directory, _, base = path.rpartition("/")
            whiteout = base.startswith(WHITEOUT_PREFIX)
            if entry.type != DIRECTORY and not whiteout:  # nothing below it stays
                gone = below(f"{path}/" if path else "")
            elif base == OPAQUE_MARKER:
                gone = below(f"{directory}/" if directory else "", but=f"{path}/")
            elif whiteout:
                name = f"{directory}/{base[4:]}" if directory else base[4:]
                gone = [*by_target.get(name, ()), *below(f"{name}/", but=f"{path}/")]
            else:
                continue
            removed.update(position for position in gone if counts(position, entry))
    return found, removed


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
