"""``python -m payhub_simulators``: the same as ``payhub-simulator``."""

from payhub_simulators.cli import main

raise SystemExit(main())
