"""sources stage: files, simulators and sensors in, ``Chunk`` / ``Beat`` streams out.

- ``replay``: WFDB / EDF / CSV records -> ``Recording`` -> ``Chunk`` iterator.
- ``reference``: WFDB annotation files -> ``Reference`` (beats, rhythm episodes).
- ``beat_times``: an annotation file replayed as a stream of RR ``Beat`` blocks.
- ``simulate``: synthetic ECG/PPG scenarios with exact ground truth (needs neurokit2).
- ``factory``: a replay / beat_times / simulate config section -> its stream.
- ``serial_ecg``, ``max30102``, ``polar_h10``: hardware front-ends.

Every bad input raises ``SourceError`` (file/device + reason). This package
init stays import-light: heavy readers (wfdb, pyedflib, neurokit2) are imported
inside the functions that need them.
"""
from edgemon.sources.errors import SourceError

__all__ = ["SourceError"]
