"""`python -m corrsteer` and the installed `corrsteer` script reach the same command line."""
import subprocess
import sys


def test_python_m_corrsteer_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "corrsteer", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("train-sae", "run", "select", "eval", "generate"):
        assert cmd in out.stdout


def test_no_command_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "corrsteer"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("corrsteer: error: ")
