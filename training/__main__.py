"""`python -m training ...`: the same command as `infinity-canvas train ...`."""

from training.cli import main

raise SystemExit(main())
