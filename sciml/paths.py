"""Where the repository's folders are; imports nothing heavy (the CLI's --help reads it without torch)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS_DIR = REPO_ROOT / "datasets"  # the built-in recipes and, by default, the files they make
