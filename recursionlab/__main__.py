import sys

from recursionlab.train.cli import main

sys.exit(main())
