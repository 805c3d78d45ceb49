"""The data byte-lcm trains and evaluates on, one module per job.

    streams.py   the default corpus fetch, document reading, and the byte-stream DataModule (entropy model, bytegpt)
    prepare.py   `blcm prepare`: documents -> units once, as memory-mapped numpy shards
    units.py     PreparedUnits windows over prepared units, collate_units, UnitDataModule (the concept model)
    sampler.py   BucketBatchSampler: batches of windows of similar length
    pairs.py     paired files and transcripts (speech <-> text): reading, the alignment loss, retrieval
"""
