"""An opt-in fork-server (zygote) for the `distproc` command (DISTPROC_FORKSERVER=1).

A command pays about 0.3 s of CPU importing the run path (asyncssh,
cryptography, asyncio, structlog, the planner, the store, the live view)
before its first connection. With the fork-server on, a background process
that has imported those once forks a child per command; the command itself
(client.py, imported before anything heavy) only hands over its standard
streams, argv, cwd, environment and umask, forwards signals to the child and
exits with its status. server.py is the background process. Off by default;
docs/benchmarks.md says how to turn it on and what it saves.
"""
