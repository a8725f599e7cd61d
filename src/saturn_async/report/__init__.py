"""``saturn report``: data.py gathers, charts.py draws, html.py writes the page."""
