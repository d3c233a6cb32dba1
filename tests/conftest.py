"""Shared test set-up: make tests/ importable so every tier can use tests/builders.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
