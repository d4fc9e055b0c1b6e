"""dsp stage."""
