"""What run.sh's training, decoding and scoring stages do, given their dirs and the config: stages.train
(stages 2, 3), stages.decode (stage 4), stages.score (stage 5); here, what they share.

Each stage hashes the settings it reads and the digests its inputs' stages recorded, so a finished stage is
skipped, and changing, say, a decoding setting never redoes training. A training run whose settings changed
is not resumed: its exp dir is moved aside to <exp-dir>.<old digest> and training starts afresh.
"""
