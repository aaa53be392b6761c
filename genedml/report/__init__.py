"""The HTML + Markdown report."""
