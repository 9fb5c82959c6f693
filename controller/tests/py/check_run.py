"""Checks a loadfleet run directory with tools that are not loadfleet's:
the JSON Schema of summary.json (jsonschema) and latency.hlog decoded by
HdrHistogram's Python port (hdrhistogram). Prints one JSON line of facts."""
import json
import math
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


def value_at_rank(h, quantile):
    """The value at rank ceil(q * N), walking the port's decoded counts.
    The port's own get_value_at_percentile rounds the rank to the nearest
    count instead; loadfleet (like HdrHistogram's Java and Rust versions)
    takes the ceiling, so the rule is fixed here and the decoding, bucketing
    and bucket bounds are the port's."""
    rank = max(1, math.ceil(quantile * h.get_total_count()))
    seen = 0
    for index in range(h.counts_len):
        seen += h.get_count_at_index(index)
        if seen >= rank:
            return h.get_highest_equivalent_value(h.get_value_from_index(index))
    return 0


print(json.dumps({
    "schema_valid": True,
    "hlog_count": untagged.get_total_count(),
    "hlog_p50_ms": value_at_rank(untagged, 0.50) / 1000,
    "hlog_p99_ms": value_at_rank(untagged, 0.99) / 1000,
    "tag_counts": {k: v.get_total_count() for k, v in tags.items()},
}))
