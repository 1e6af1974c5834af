"""`python -m opusclip_track.cli ...`: the same command line as `opusclip-track ...`."""

from opusclip_track.cli import main

raise SystemExit(main())
