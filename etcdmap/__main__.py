"""``python -m etcdmap``: the etcdmap command line."""

from etcdmap.cli import main

raise SystemExit(main())
