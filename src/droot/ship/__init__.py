"""SHIP: stores (s3, path, http, stdio), compression, checksums and progress."""
