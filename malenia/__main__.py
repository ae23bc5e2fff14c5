"""`python -m malenia ...`: the same command line as `malenia ...`."""

import sys

from malenia.cli import main

if __name__ == "__main__":
    sys.exit(main())
