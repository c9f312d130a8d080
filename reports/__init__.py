"""Tables, plots, statistics across seeds and the HTML/Markdown report (no training here)."""
