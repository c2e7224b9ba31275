import sys

from eventstore_actors.bench.cli import main

sys.exit(main())
