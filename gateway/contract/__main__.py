"""`python -m gateway.contract`: write the JSON Schemas from the models, after a model or
an enum of the code changed; says which files changed."""

from __future__ import annotations

from gateway.contract.schemas import DIRECTORY, texts


def main() -> None:
    for name, text in texts().items():
        path = DIRECTORY / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
