"""``python -m pyloader``: the command line (``inspect`` and ``bench``; see ``_cli.py``)."""

from ._cli import main

raise SystemExit(main())
