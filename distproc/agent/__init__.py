"""The host agent: runs one host's share of a job, on that host.

This package is shipped to every host as a zipapp and run by the host's own
python3 (3.9 or newer), so it imports nothing but the standard library and
nothing from the rest of distproc. Every module here keeps that rule.
"""
