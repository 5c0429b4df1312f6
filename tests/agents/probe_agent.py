#!/usr/bin/env python3
"""A test agent that records exactly what it was given, byte for byte.

    probe_agent.py OUTDIR PROMPT_FILE [ARGS...]

Copies the prompt file to OUTDIR/<session>/prompt_file.bin and each further
argument (the original bytes, via os.fsencode) to OUTDIR/<session>/arg<i>.bin;
writes info.json (argument count, cwd, PARA_* environment, the instruction
file); creates `done` last. The session comes from PARA_SESSION.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    outdir, prompt_file, rest = Path(argv[0]), Path(argv[1]), argv[2:]
    out = outdir / os.environ["PARA_SESSION"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompt_file.bin").write_bytes(prompt_file.read_bytes())
    for i, arg in enumerate(rest):
        (out / f"arg{i}.bin").write_bytes(os.fsencode(arg))
    instr = Path(".para-agent.md")
    (out / "info.json").write_text(json.dumps({
        "argc": len(argv), "cwd": os.getcwd(), "prompt_file": str(prompt_file),
        "env": {k: v for k, v in os.environ.items() if k.startswith("PARA_")},
        "instruction_file": instr.read_text() if instr.exists() else None}))
    (out / "done").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
