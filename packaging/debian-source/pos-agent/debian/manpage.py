"""Print the manual page agent(1), for debian/rules: the page packaging/debian/build.py writes for
the venv package, from the command line's own parser (which imports nothing but the standard
library, so the build needs no runtime dependency). Run from the top of the source tree; the date
is SOURCE_DATE_EPOCH's (dpkg-buildpackage sets it from debian/changelog)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

TOP = Path.cwd()
spec = importlib.util.spec_from_file_location("venv_deb", TOP / "packaging/debian/build.py")
venv_deb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(venv_deb)

# isolated (-I): neither PYTHONPATH nor an installed agent, only this tree's
code = f"import sys; sys.path.insert(0, ''); {venv_deb.LIST_COMMANDS}"
listed = subprocess.run(
    [sys.executable, "-I", "-B", "-c", code], cwd=TOP, capture_output=True, text=True, check=True
).stdout
commands = [tuple(command) for command in json.loads(listed)]
epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
sys.stdout.buffer.write(venv_deb.manual_page(venv_deb.project_version(), epoch, commands))
