"""``python -m nodeflow`` runs the command line, as the ``nodeflow`` script does."""

from nodeflow.cli import main

raise SystemExit(main())
