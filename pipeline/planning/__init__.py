"""What a run will cost and whether it may: ``bulkscribe plan`` and budget admission.

* :mod:`~pipeline.planning.plan`: audio hours, cost and wall time of a set of INPUTs.
* :mod:`~pipeline.planning.pricing`: prices per model; budget caps from settings and flags.
* :mod:`~pipeline.planning.budget`: which items fit under a batch's caps (pure).
* :mod:`~pipeline.planning.rtf`: this machine's real-time factor for the local engine.
* :mod:`~pipeline.planning.probe_cache`: ffprobe reports cached by path, size and mtime.
"""
