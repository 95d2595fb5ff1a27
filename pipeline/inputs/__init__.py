"""What a run or a batch is given, up to the items in the ledger.

* :mod:`~pipeline.inputs.classify`: what each INPUT is (media file, directory, manifest),
  read safely by type and first bytes.
* :mod:`~pipeline.inputs.manifest`: INPUTs into manifest items (JSONL, CSV, lists, trees).
* :mod:`~pipeline.inputs.ids`: what an explicit id may be; ids derived from paths.
* :mod:`~pipeline.inputs.listing`: ``s3://`` prefixes and S3 Inventory reports as manifests.
* :mod:`~pipeline.inputs.batches`: manifest items into ledger seeds and batch ids.
* :mod:`~pipeline.inputs.intake`: a manifest of any length into the ledger in chunks.
* :mod:`~pipeline.inputs.sources`: a source (path, URL, object) into a local file.
* :mod:`~pipeline.inputs.netguard`: where a download may connect, and for how long.
"""
