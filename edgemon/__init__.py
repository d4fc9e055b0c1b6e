"""edgemon: edge agent for wearable ECG/PPG monitoring.

Data flows one way: sources -> dsp -> detect -> alerts -> transport; hub and
cli sit on top. See docs/architecture.md.
"""
__version__ = "0.1.0"
