"""One libFuzzer process: ``python -m fuzz.child TARGET [libFuzzer flags and corpus dirs]``.

rtp2ws is imported under atheris' bytecode instrumentation, so coverage of the product
(not of the target or the libraries) guides the mutations.  ``fuzz.run`` starts this."""

from __future__ import annotations

import importlib
import sys

import atheris


def main() -> None:
    target = sys.argv[1]
    with atheris.instrument_imports(include=["rtp2ws"]):
        module = importlib.import_module(f"fuzz.targets.{target}")
    atheris.Setup([sys.argv[0]] + sys.argv[2:], module.TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
