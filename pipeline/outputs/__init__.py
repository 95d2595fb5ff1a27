"""What a run leaves behind: transcripts, their files, results.jsonl and batch reports.

* :mod:`~pipeline.outputs.transcript`: engine-neutral transcripts and the Fun-ASR document.
* :mod:`~pipeline.outputs.render`: the ``.json``/``.txt``/``.srt``/``.vtt``/``.tsv`` writers.
* :mod:`~pipeline.outputs.results`: results.jsonl, one line per item in manifest order.
* :mod:`~pipeline.outputs.report`: batch status (counts, timings, failures) as data and table.
* :mod:`~pipeline.outputs.outdir`: a run's own files under ``--out``, opened safely.
"""
