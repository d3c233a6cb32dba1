"""python -m streams == the `corridor` command."""
from streams.cli import main

raise SystemExit(main())
