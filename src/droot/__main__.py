import sys

try:
    from droot.cli import main
except KeyboardInterrupt:  # Ctrl-C while droot's modules load, before main() reports it
    sys.stderr.write("droot: interrupted\n")
    sys.exit(130)

sys.exit(main())
