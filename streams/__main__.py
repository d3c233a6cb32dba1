"""python -m streams == the `corridor` command."""
from .cli import main

raise SystemExit(main())
