"""``python -m st_tasb``: the ``st-tasb`` command line (also ``accelerate launch -m st_tasb train ...``)."""

import sys

from st_tasb.cli import main

if __name__ == "__main__":
    sys.exit(main())
