"""No import after chroot: droot never runs code from the image.

After chroot every path is inside the image, Python's library path too: a module droot
imported then (`traceback` for --debug, an encoding, any lazy import of the standard
library) would be the image's copy, run as root before any capability is dropped.
`droot run` and `droot exec` import what they need before chroot and seal the import
system just before it: from then on an import of anything not already loaded fails with
ImportError instead of searching the root. Modules built into the interpreter stay
importable (they are in the executable, not in any file of the root).
"""

import sys

_BUILT_IN = frozenset(sys.builtin_module_names)


class _Sealed:
    """The first finder on sys.meta_path: refuses every module that is not built in."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in _BUILT_IN:
            return None  # the built-in importer, next in line, loads it from the executable
        raise ImportError(f"droot imports nothing after chroot (wanted {name})", name=name)


def seal() -> None:
    """Refuse every later import of a module that is not built in."""
    if not sealed():
        sys.meta_path.insert(0, _Sealed)


def sealed() -> bool:
    return _Sealed in sys.meta_path
