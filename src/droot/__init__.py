"""droot: chroot-based application containers (build with Docker, ship, deploy, run)."""

__version__ = "0.1.0"
