import sys

from genedml.cli import main

sys.exit(main())
