# Reads {"current": <GET /config>, "desired": <dynamic configuration>} on
# stdin and prints the JSON merge patch (PATCH /config) that turns the first
# into the second for the keys the playbook owns: top-level timing keys,
# postgresql.use_pg_rewind / use_slots, and postgresql.parameters entirely
# (a parameter no longer desired is removed with null). "{}" when in line.
import json
import sys


def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or str(a).lower() == str(b).lower()
    return str(a) == str(b)


doc = json.load(sys.stdin)
current = doc.get("current") or {}
desired = doc["desired"]
patch = {}
for key, value in desired.items():
    if key == "postgresql":
        continue
    if key not in current or not same(current[key], value):
        patch[key] = value

want_pg = desired.get("postgresql", {})
have_pg = current.get("postgresql") or {}
pg_patch = {}
for key, value in want_pg.items():
    if key == "parameters":
        continue
    if key not in have_pg or not same(have_pg[key], value):
        pg_patch[key] = value
want_params = {k: str(v) for k, v in (want_pg.get("parameters") or {}).items()}
have_params = have_pg.get("parameters") or {}
params = {k: v for k, v in want_params.items() if k not in have_params or not same(have_params[k], v)}
params.update({k: None for k in have_params if k not in want_params})
if params:
    pg_patch["parameters"] = params
if pg_patch:
    patch["postgresql"] = pg_patch
print(json.dumps(patch, sort_keys=True))
