"""alerts: Detection + QualityWindow -> alert messages (lifecycle, dedup, grouping, inhibition, silences).

Takes the detect stage's ``Detection`` and the dsp stage's ``QualityWindow``
streams; gives ``AlertPayload`` messages for the transport. Modules:
``policy`` (the [alerts] config section), ``conditions`` (vocabulary,
priorities, SNOMED CT / IEEE 11073 codes), ``payload`` (the JSON message and
its schema), ``engine`` (``AlertEngine``, pure time-driven logic).
See docs/alerts.md.
"""
