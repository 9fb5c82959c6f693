"""Checks a loadfleet run directory with tools that are not loadfleet's:
the JSON Schema of summary.json (jsonschema) and latency.hlog decoded by
HdrHistogram's Python port (hdrhistogram). Prints one JSON line of facts."""
import json
import sys

import jsonschema
from hdrh.histogram import HdrHistogram

run, schema_path = sys.argv[1], sys.argv[2]
summary = json.load(open(f"{run}/summary.json"))
schema = json.load(open(schema_path))
jsonschema.Draft202012Validator.check_schema(schema)
jsonschema.Draft202012Validator(schema).validate(summary)

untagged = HdrHistogram(1, 3600000000, 3)
tags = {}
for line in open(f"{run}/latency.hlog"):
    if line.startswith("#") or line.startswith('"'):
        continue
    fields = line.strip().split(",")
    h = HdrHistogram.decode(fields[-1])
    if fields[0].startswith("Tag="):
        tags.setdefault(fields[0][4:], HdrHistogram(1, 3600000000, 3)).add(h)
    else:
        untagged.add(h)
print(json.dumps({
    "schema_valid": True,
    "hlog_count": untagged.get_total_count(),
    "hlog_p50_ms": untagged.get_value_at_percentile(50) / 1000,
    "hlog_p99_ms": untagged.get_value_at_percentile(99) / 1000,
    "tag_counts": {k: v.get_total_count() for k, v in tags.items()},
}))
