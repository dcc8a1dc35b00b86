"""`python -m sala_report.app` is the same as `sala-report`."""

import sys

from sala_report.app.cli import main

sys.exit(main())
