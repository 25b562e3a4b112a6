"""recursionlab: a Jupyter-first course on recursion in neural networks.

Layers (an import only ever points down this list): ``data`` -> ``nn`` -> ``solvers`` -> ``models`` ->
``train`` -> ``course``; ``profiles`` sits beside them all.
"""

from recursionlab.profiles import active_profile, by_profile

__version__ = "0.1.0"
__all__ = ["active_profile", "by_profile", "__version__"]
