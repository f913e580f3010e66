"""What a person sees: console output, the live view, the HTML report (and its
SVG charts), and logging set-up for the CLI.
"""
