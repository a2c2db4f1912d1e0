"""``python -m recursa``."""

from recursa.cli import main

raise SystemExit(main())
