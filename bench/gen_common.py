"""What the benchmarks' generators share: writing files and filling configuration templates.

Standard library only.
"""

import os
import re
import sys


def write(path, text):
    """Writes `text` to `path`, making its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def renderer(here):
    """A `render(template, path, **values)` for the templates in folder `here`: every
    `@KEY@` replaced by its value; a placeholder left unfilled stops the generator."""

    def render(template, path, **values):
        with open(os.path.join(here, template)) as f:
            text = f.read()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        left = re.search(r"@[A-Z_]+@", text)
        if left:
            sys.exit(f"gen.py: {template}: placeholder {left.group(0)} left unfilled")
        write(path, text)

    return render
