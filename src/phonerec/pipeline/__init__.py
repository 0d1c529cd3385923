"""The top layer: the stage functions that steps/ and local/ call (prepare_stage, features_stage, train_stages,
decode_stages, score_stages, bundle_stage, align_stage, export_stage) and what they share: a step's command line,
the done-markers, the config keys each stage reads, RESULTS.md. (Errors, atomic writes, locks and the config itself
are phonerec.base's, under every layer.)

Each stage hashes the settings it reads and the digests its inputs' stages recorded, so a finished stage is
skipped, and changing, say, a decoding setting never redoes training. A training run whose settings changed
is not resumed: its exp dir is moved aside to <exp-dir>.<old digest> and training starts afresh, unless a run
of the new settings was moved aside so before: that one moves back and resumes.
"""
