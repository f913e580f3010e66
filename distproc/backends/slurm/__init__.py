"""The Slurm backend (issue 16), so far its pure parts: the inventory document and the submission.

inventory.py  a Slurm cluster's description (submit node, partitions per
              instance type, GPUs, account, QoS, shared filesystem) to frozen values;
submit.py     one processing job to one sbatch command line and batch script.

Not yet a Backend (acquire/endpoint/reach/release): see docs/slurm.md.
"""
