"""droot.core.removetree: a tree of any depth goes (shutil.rmtree recursed a frame a
level), and nothing a symlink in it names is touched."""

import os

import pytest

from droot.core.removetree import DIRECTORY_FLAGS, TreeMoved, remove_tree


def make_deep(top, levels: int, name: str = "d"):
    """`levels` nested directories below `top`, made by descriptor (deeper than any path
    the kernel takes), a file in the deepest."""
    fd = os.open(top, DIRECTORY_FLAGS)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def test_a_tree_deeper_than_a_path_goes(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    make_deep(tree, 3000)
    (tree / "wide").mkdir()
    for n in range(200):
        (tree / "wide" / f"s{n}").mkdir()
        (tree / "wide" / f"s{n}" / "file").write_bytes(b"x")
    remove_tree(str(tree))
    assert not tree.exists()
    remove_tree(str(tree))  # what is gone already is not an error


def test_symlinks_in_it_are_removed_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "to-dir").symlink_to(outside)
    (tree / "a" / "to-file").symlink_to(outside / "keep")
    top_fd = os.open(tmp_path, DIRECTORY_FLAGS)
    try:
        remove_tree("tree", top_fd)
    finally:
        os.close(top_fd)
    assert not tree.exists() and (outside / "keep").read_bytes() == b"k"
    (tmp_path / "link").symlink_to(outside)
    with pytest.raises(NotADirectoryError):  # the top itself is not followed either
        remove_tree(str(tmp_path / "link"))
    assert (outside / "keep").exists()


def test_a_directory_moved_away_meanwhile_stops_it(tmp_path, monkeypatch):
    """Going back up, `..` must be where it came from: a directory renamed elsewhere
    while it was being emptied stops the removal (here moved between two levels)."""
    tree = tmp_path / "tree"
    make_deep_tree = tree / "a" / "b"
    make_deep_tree.mkdir(parents=True)
    (make_deep_tree / "f").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real_listdir = os.listdir

    def listdir_then_move(fd):
        names = real_listdir(fd)
        if names == ["f"]:  # in b: move it out from under a
            os.rename(make_deep_tree, elsewhere / "b")
        return names

    monkeypatch.setattr(os, "listdir", listdir_then_move)
    with pytest.raises(TreeMoved):
        remove_tree(str(tree))
    monkeypatch.undo()
    assert (elsewhere / "b").is_dir() and (tree / "a").is_dir()
