"""hub: the clinician side. MQTT alerts from all devices -> deduplicated store -> receipts; FHIR export.

Takes alert messages from the broker; gives one stored row per message_id
(``store``), a receipt to the device after the commit and presence tracking
(``service``), console lines (``format``) and a FHIR R4 Bundle (``fhir``).
Sits on top of transport (uses its topic layout and wire schemas).
"""
