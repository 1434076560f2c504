import sys

from mpchat.cli import main

sys.exit(main())
