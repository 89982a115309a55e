"""`python -m phoenix_rl.research.hpo`: run or join a study (phoenix_rl.research.hpo.study.main)."""

from phoenix_rl.research.hpo.study import main

raise SystemExit(main())
