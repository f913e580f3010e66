"""Where a job's hosts come from: one declared interface (base.py), one module per kind of backend.

fleet (the SSH fleet: the hosts of an inventory, leased through their agents)
is the first; the runner (run/runner.py) talks only to a base.Backend (a fleet
of the hosts it is given unless it is handed another). Modelled on
SkyPilot's sky/provision/: the interface and its shared typed records in
base.py, each provider beside it.
"""
