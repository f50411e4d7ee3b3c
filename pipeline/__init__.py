"""veza-pipeline: the build-and-release engine of the Veza platform.

Nothing in this package imports invoke: tasks.py is the only CLI layer.
"""

__version__ = "0.1.0"
