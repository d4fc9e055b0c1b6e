"""hub.web: the clinician console served by the hub (``edgemon hub --http HOST:PORT``).

Takes the hub's store, live feed and command publisher; gives server-rendered
HTML pages with a little plain JavaScript (no build step): the alert inbox
with live updates (server-sent events), each alert on its ECG strip drawn on
ECG paper (``ecg``), its evidence and lifecycle, acknowledge/silence commands
with the device's reply, the device list and FHIR export. Stdlib HTTP server
(``server``); access control in ``edgemon.hub.auth``.
"""
