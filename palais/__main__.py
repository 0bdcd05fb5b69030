import sys

from palais.cli import main

sys.exit(main())
