"""`python -m convscope ...`: the same as the `convscope` command."""

from .cli import main

raise SystemExit(main())
