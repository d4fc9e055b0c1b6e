"""daemon: the long-running device agent around the pipeline.

Takes a validated ``DeviceConfig``; gives ``edgemon run``: a source thread
(hardware readers or a replay), the synchronous ``pipeline.Pipeline`` (owned
by the dsp/detect/alerts stages), and the MQTT transport, joined by bounded
queues (``runner``), with systemd notifications (``sdnotify``), JSON logs
(``jsonlog``), raw-stream recording (``recorder``), config wiring
(``wiring``) and the benchmark (``bench``). Import-light: nothing here pulls
scipy.signal, wfdb, pandas, neurokit2 or TensorFlow onto the run path.
"""
