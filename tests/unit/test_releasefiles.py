"""The image config inside an archive (droot.core.releasefiles): `/.drootenv` and
`/.droot.json` read back what was written, and what the reader forgives is said here."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from droot.core.releasefiles import (CONFIG_FILE, DROOT_FILES, ENV_FILE, format_config,
                                     format_env, parse_config, parse_env)

# A name as images have them; a value is anything on one line but NUL (which no
# environment carries): `=`, spaces, quotes, and the characters str.splitlines() also
# breaks at (\r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029), which a `/.drootenv` line
# keeps (it ends at \n only).
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
values = st.text(st.characters(exclude_characters="\n\0", exclude_categories=("Cs",)),
                 max_size=40)
LINE_BREAKS_BUT_NOT_NEWLINE = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@given(st.dictionaries(names, values, max_size=8))
def test_env_round_trips(env):
    text = format_env([f"{name}={value}" for name, value in env.items()]).decode()
    assert parse_env(text) == env


@pytest.mark.parametrize("character", LINE_BREAKS_BUT_NOT_NEWLINE)
def test_a_value_keeps_every_character_but_newline(character):
    value = f"a{character}b=c"
    assert parse_env(format_env([f"K={value}", "L=1"]).decode()) == {"K": value, "L": "1"}


def test_env_file_format():
    """One `KEY=VALUE` line each, in order, UTF-8; a value with a newline is left out (it
    travels in `/.droot.json`), and its neighbours are kept."""
    written = format_env(["A=1", "B=x\ny", "C=é = \"q\"", "D=", "E=\ud800"])
    assert written == 'A=1\nC=é = "q"\nD=\n'.encode()  # E: a lone surrogate, not UTF-8
    assert format_env([]) == b""


def test_what_the_env_reader_forgives():
    text = "\nA=1\nno equals sign\n=no name\nB= spaced \nA=2\n\nC\nD=a\0b\n"
    assert parse_env(text) == {"A": "2", "B": " spaced "}  # the last A wins, no NUL


configs = st.fixed_dictionaries({
    "entrypoint": st.lists(st.text(max_size=10), min_size=1, max_size=3),
    "cmd": st.lists(st.text(max_size=10), min_size=1, max_size=3),
    "working_dir": st.text(min_size=1, max_size=20),
    "user": st.text(min_size=1, max_size=10),
    "env": st.lists(st.text(max_size=20), min_size=1, max_size=4),
    "source": st.text(max_size=30),
    "digest": st.text(max_size=30),
})


@given(configs)
def test_config_round_trips(config):
    assert parse_config(format_config(**config).decode()) == config


def test_config_file_format():
    written = format_config(entrypoint=[], cmd=None, working_dir=None, user="", env=None,
                            source="oci:app", digest="sha256:ab")
    assert written.startswith(b'{\n  "version": 1,\n  "entrypoint": null,\n')  # for people
    assert written.endswith(b"\n}\n")
    assert json.loads(written) == {"version": 1, "entrypoint": None, "cmd": None,
                                   "working_dir": "", "user": "", "env": [],
                                   "source": "oci:app", "digest": "sha256:ab"}


def test_an_older_config_gets_defaults():
    assert parse_config('{"cmd": ["/bin/sh"], "version": 0}') == {
        "entrypoint": [], "cmd": ["/bin/sh"], "working_dir": "", "user": "", "env": [],
        "source": "", "digest": ""}
    assert parse_config('{"entrypoint": null, "user": null}')["entrypoint"] == []


@pytest.mark.parametrize("text", ["[]", '"x"', "1", "null", "{", ""])
def test_a_config_that_is_not_an_object_is_refused(text):
    with pytest.raises(ValueError):
        parse_config(text)


def test_a_config_of_another_json_type_says_so():
    with pytest.raises(ValueError, match="^not a JSON object$"):
        parse_config("[]")


def test_droot_files_are_the_two_at_the_root():
    assert (ENV_FILE, CONFIG_FILE) == (".drootenv", ".droot.json")
    assert DROOT_FILES == {ENV_FILE, CONFIG_FILE}
