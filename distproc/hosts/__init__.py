"""Reaching hosts: transports (SSH, local), the session with a host's agent, what
is shipped to a host (the agent bundle, its dependencies, images), and host checks.
"""
