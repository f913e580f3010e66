"""Running a job: the coordinator's side, from claiming hosts to the job's outcome.

runner (JobRunner: the sequence of a job), options (RunOptions), context (what
its parts share), recorder (every event to the store, the live view and the
log), hoststate (what is known of each host, its HostPhase), watch (launching
and following the hosts), endofjob (outputs, clean-up, a lost host's last try),
outcome (statuses and the FailureReason), attach (taking over a job whose `run`
died) and control (stop requests). The hosts come from a backend (backends/).
"""
