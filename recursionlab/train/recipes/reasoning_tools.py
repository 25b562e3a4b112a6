"""Command line for the HRM/TRM assets: ``export`` a training checkpoint, run lesson 08's ``ablations``.

    python -m recursionlab.train.recipes.reasoning_tools export runs/trm-mlp-sudoku-laptop/last.pt trm_sudoku6
    python -m recursionlab.train.recipes.reasoning_tools ablations trm_ablations.json --profile laptop

(A separate module so that running it does not register the recipes of ``reasoning`` a second time.)
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from recursionlab.train.recipes.reasoning import main

    sys.exit(main())
