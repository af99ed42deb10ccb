"""``python -m learnloop``: the same as the ``learnloop`` command."""

from learnloop.cli.main import main

raise SystemExit(main())
