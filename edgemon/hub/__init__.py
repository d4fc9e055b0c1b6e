"""hub: the clinician side. MQTT alerts from all devices -> deduplicated store -> receipts; console; FHIR export.

Takes alert messages from the broker; gives one stored row per device and
message_id (``store``: the ``AlertStore`` interface, SQLite; ``pgstore``:
PostgreSQL for several hub workers), a receipt to the sender after the commit and presence
tracking (``service``), console lines (``format``), a FHIR R4 Bundle
(``fhir``), the web console (``console``, ``web``, ``live``, ``auth``,
``summary``) and the broker PKI (``pki``; ``pgserver`` runs a private
PostgreSQL for tests and benchmarks). Sits on top of transport (uses its topic
layout and wire schemas) and reads alert payloads by field name.
"""
