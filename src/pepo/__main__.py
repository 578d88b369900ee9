"""``python -m pepo ...`` is ``pepo ...`` (what ``accelerate launch -m pepo train`` runs)."""

from pepo.cli import main

raise SystemExit(main())
