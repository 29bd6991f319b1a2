"""`python -m webbuild`: the command-line entry point."""

from .cli.main import main

raise SystemExit(main())
