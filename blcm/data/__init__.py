"""The data byte-lcm trains and evaluates on, one module per job.

    corpus.py     the default corpus (State of the Union): fetched once, verified, split by a stable hash
    documents.py  reading documents from JSONL(.gz) files, other files and directories; what was skipped
    streams.py    a byte stream of documents for byte language models, cached; ByteStreamDataModule
    prepare.py    `blcm prepare`: documents -> units once, as memory-mapped numpy shards
    units.py      PreparedUnits windows over prepared units, collate_units, UnitDataModule (the concept model)
    sampler.py    BucketBatchSampler: batches of windows of similar length
    pairs.py      paired files and transcripts (speech <-> text): reading, the alignment loss, retrieval
"""
