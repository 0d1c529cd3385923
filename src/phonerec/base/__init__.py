"""The floor under every other package: errors, atomic writes and digests, what the recipe owns and the lock on a
dir it writes, and the config (its composition, its schema, the views stages and decoders take of it). Nothing
here imports another phonerec package."""
