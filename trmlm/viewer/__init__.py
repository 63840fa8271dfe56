"""The recursion viewer: a self-contained HTML page of a puzzle trace or a generated text."""
