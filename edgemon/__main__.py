import sys

from edgemon.cli import main

sys.exit(main())
