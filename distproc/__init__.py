"""distproc: SageMaker-Processing-style container jobs on machines you own."""

__version__ = "0.1.0"
