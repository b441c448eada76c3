"""`python tests/fake_cli.py <corrsteer arguments>`: the corrsteer command line with the fake task (fakes.FakeTask,
which a random tiny model answers right about half the time) registered as task "fake" — for the subprocess and
torchrun tests, which cannot monkeypatch the CLI."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fakes import FakeTask  # noqa: E402

from corrsteer.cli import main as cli  # noqa: E402
from corrsteer.tasks.task import register_task  # noqa: E402

register_task("fake")(lambda seed: FakeTask(40))

if __name__ == "__main__":
    sys.exit(cli.main())
