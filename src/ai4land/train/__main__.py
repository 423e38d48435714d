import sys

from ai4land.train.loop import main

sys.exit(main())
