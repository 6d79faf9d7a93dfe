"""A Limes function written in Python: `component:run/run`, as the Rust guests export it.

`cargo xtask guests` turns this file into `target/guests/python-hello.wasm` with componentize-py
(see README.md beside it). The class name and method follow the WIT interface `run` in
`guests/wit/run.wit`: `run: func(args: string) -> string`.
"""

import sys

from wit_world import exports


class Run(exports.Run):
    def run(self, args: str) -> str:
        # Arguments arrive as one string, "key=value" pairs by convention; an exception here
        # becomes a trap, which the node reports as a function error (HTTP 500).
        pairs = dict(part.split("=", 1) for part in args.split() if "=" in part)
        name = pairs.get("name", "world")
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return f"hello, {name}, from Python {version}"
