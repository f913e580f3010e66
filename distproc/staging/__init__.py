"""Moving job data between where it lives and the hosts."""
