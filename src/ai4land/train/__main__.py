"""``python -m ai4land.train ARGS`` = ``ai4land train ARGS`` (one set of flags, one code path);
``torchrun ... -m ai4land.train ARGS`` runs it once per rank."""

import sys

from ai4land.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
