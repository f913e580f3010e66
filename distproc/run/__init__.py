"""Running a job: the coordinator's side, from claiming hosts to the job's outcome.

runner (JobRunner: the sequence of a job), hoststate (what is known of each
host), watch (launching and following the hosts), endofjob (outputs, clean-up,
a lost host's last try), outcome (statuses and the FailureReason), attach (taking
over a job whose `run` died) and control (stop requests).
"""
