import sys

from embedserve.cli import main

sys.exit(main())
