"""The data byte-lcm trains and evaluates on, one module per job.

    corpus.py       the default corpus (State of the Union): fetched once, verified, split by a stable hash
    documents.py    reading documents from JSONL(.gz) files, other files and directories; what was skipped
    fingerprint.py  one digest of the input files, for what is computed from them once and kept
    streams.py      a byte stream of documents for byte language models, cached; ByteStreamDataModule
    prepare.py      `blcm prepare`: documents -> units once, resumable, into a prepared directory
    shards.py     a prepared directory's layout: its manifest and numpy shards, written and read
    windows.py      the windows a prepared split is cut into, from its documents' unit counts
    units.py        PreparedUnits (a split's windows), collate_units, UnitDataModule (the concept model)
    sampler.py      BucketBatchSampler: batches of windows of similar length
    pairs.py        paired files and transcripts (speech <-> text): reading, the alignment loss, retrieval
"""
