"""A Limes function in Python with state: it counts flood alarms per district.

`run("district=north")` adds one alarm to district north in the function's key-value store
`default` and answers the district's count. Deploy it with `--kv default`. The store comes
from `wasi:keyvalue@0.2.0-draft2` (world `runnable-with-state` in `guests/wit/run.wit`);
`cargo xtask guests` builds it with componentize-py.
"""

from wit_world import exports
from wit_world.imports import atomics, store
from componentize_py_types import Err


class Run(exports.Run):
    def run(self, args: str) -> str:
        pairs = dict(part.split("=", 1) for part in args.split() if "=" in part)
        district = pairs.get("district", "unknown")
        try:
            alarms = store.open("default")
            count = atomics.increment(alarms, "alarms:" + district, 1)
        except Err as e:
            # The store's error: access-denied without --kv default, other(...) past a limit.
            return f"cannot count: {e.value}"
        return f"{district}: {count} alarms"
