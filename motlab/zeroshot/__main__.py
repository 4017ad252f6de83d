"""``python -m motlab.zeroshot``: the same as ``motlab zeroshot``."""

from motlab.zeroshot.command import main

raise SystemExit(main())
