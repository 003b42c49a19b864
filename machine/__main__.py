"""``python -m machine``: the same command as ``fwcfg-e500``."""

from machine.cli import main

raise SystemExit(main())
