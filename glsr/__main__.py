import sys

from glsr.cli import main

sys.exit(main())
