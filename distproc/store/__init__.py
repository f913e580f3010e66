"""The job store: SQLite records of jobs, hosts and events (db), and what is read
back from them (views, timeline, metrics).
"""
