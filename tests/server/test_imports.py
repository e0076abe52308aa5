"""What starting the server imports: never torch or scikit-learn, and scipy only once a labelling
job needs it (importing it costs every start 0.3 s)."""

import subprocess
import sys


def test_the_server_imports_neither_torch_nor_sklearn_nor_scipy_at_start():
    code = (
        "import sys, embedserve.cli, embedserve.server.startup, embedserve.server.app; "
        "print(' '.join(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
