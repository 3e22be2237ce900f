import sys
from pathlib import Path

# products_testkit (synthetic frames, ingest helpers) is shared with the products tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "products"))
