"""What run.sh's steps share: the config, the command line of a step, errors, done-markers and locks, atomic
writes, and the stage functions that steps/ call (train_stages, decode_stages, score_stages, bundle_stage,
align_stage).

Each stage hashes the settings it reads and the digests its inputs' stages recorded, so a finished stage is
skipped, and changing, say, a decoding setting never redoes training. A training run whose settings changed
is not resumed: its exp dir is moved aside to <exp-dir>.<old digest> and training starts afresh, unless a run
of the new settings was moved aside so before: that one moves back and resumes.
"""
