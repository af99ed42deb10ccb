"""``python -m learnloop.jobs run|evaluate ...``: a worker process.

See :mod:`learnloop.jobs.worker`.
"""

from learnloop.jobs.worker import main

raise SystemExit(main())
