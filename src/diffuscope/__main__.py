from diffuscope.cli import main

raise SystemExit(main())
