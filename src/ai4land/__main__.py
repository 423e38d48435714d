from ai4land.cli import main

raise SystemExit(main())
