"""`python -m gateway` is `edge-gateway`."""

from gateway.cli import main

raise SystemExit(main())
