import sys

from droot.cli import main

sys.exit(main())
