"""Hosts from an Ansible YAML inventory, and the choice of hosts for a job.

One file drives both ``ansible-playbook`` and ``distproc run``: distproc reads
Ansible's connection variables (``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file``, ``ansible_connection``)
and its own ``distproc_*`` variables, and refuses what it cannot honour (Jinja
templates, keys given twice, ``ansible_*`` and ``distproc_*`` names neither
Ansible nor distproc knows, instance types no job can ask for) rather than
guess, listing every problem at once. A file in the
format of Ansible's ``amazon.aws.aws_ec2`` plugin describes EC2 instances
instead, found with boto3 when it is read (:mod:`distproc.inventory.ec2`). See
docs/inventory.md for the variables, precedence and selection rules.

>>> inventory = load_inventory("inventory/three-hosts.yaml")
>>> [h.name for h in select_hosts(inventory, "ml.m5.xlarge", 2)]
['node1', 'node2']
"""

from ._load import load_inventory
from ._model import Connection, GpuMode, Gpus, Host, Inventory
from ._names import KNOWN_DISTPROC_VARIABLES
from ._select import select_hosts

__all__ = [
    "KNOWN_DISTPROC_VARIABLES",
    "Connection",
    "GpuMode",
    "Gpus",
    "Host",
    "Inventory",
    "load_inventory",
    "select_hosts",
]
