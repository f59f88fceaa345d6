"""``python -m nfd`` is the ``nfd`` command."""

from nfd.cli import main

raise SystemExit(main())
