"""``python -m sepkit.train CONFIG``: see :mod:`sepkit.cli.train`."""

from sepkit.cli.train import main

raise SystemExit(main())
