"""The fast layer: in-process tests of droot's pure parts (argument parsing, exit
statuses, the tar codec, compression sniffing, the release files and names). No
subprocess, no Docker, nothing that needs root: `pytest tests/unit` runs them alone in
seconds; the full suite runs them too."""
