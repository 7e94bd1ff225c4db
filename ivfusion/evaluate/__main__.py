"""``python -m ivfusion.evaluate``: the same command as ``ivfusion evaluate``."""
import sys

from ivfusion.evaluate import main

sys.exit(main())
