#!/usr/bin/env python3
"""Writes the link order of Deploy/build-static.sh from a profile of the agent.

    order-file.py LINK_MAP PROFILED_BINARY CALLGRIND_OUT... > Deploy/spectra-agent.order

Every function callgrind saw run, by its symbol name, in the order first seen. A name several
objects define (the compiler's outlined copies and merged helpers are local to each object) moves
every copy, so one is kept only when that drags no large section along that is not laid out first
already (the Swift runtime's and Foundation's libraries are built without a section per function;
each of their objects is one section).
"""
import bisect
import collections
import re
import subprocess
import sys

link_map, profiled, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]

# The map (lld -Map, names not demangled): each .text input section and the symbols in it.
sections = []  # [size]
held_in = collections.defaultdict(list)  # symbol -> indexes into sections
in_text = False
for line in open(link_map):
    m = re.match(r'\s*[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ (\s*)(.*)$', line)
    if not m:
        continue
    size, indent, name = int(m.group(1), 16), len(m.group(2)), m.group(3)
    if indent == 0:
        in_text = name == '.text'
    elif in_text and indent == 8:
        sections.append(size)
    elif in_text and sections:
        held_in[name].append(len(sections) - 1)

# callgrind names code it has no symbol for by its address in the profiled binary.
symbols = []
nm = subprocess.run(['nm', '--defined-only', profiled], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[1] in 'tTwW':
        symbols.append((int(fields[0], 16), fields[2]))
symbols.sort()
starts = [address for address, _ in symbols]


def symbol_name(name):
    name = name.split("'")[0]  # callgrind's recursion depth suffix
    if name.startswith('0x'):
        i = bisect.bisect_right(starts, int(name, 16)) - 1
        return symbols[i][1] if i >= 0 else name
    return name


first_seen = {}
for profile in profiles:
    for line in open(profile, errors='replace'):
        if line.startswith(('fn=', 'cfn=')):
            first_seen.setdefault(symbol_name(line.split('=', 1)[1].strip()), None)

hot = set()
for name in first_seen:
    where = set(held_in.get(name, ()))
    if not where:
        continue
    if len(where) > 1 and any(sections[i] > 16384 for i in where - hot):
        continue
    hot |= where
    print(name)
print(f'order-file: {len(hot)} sections, {sum(sections[i] for i in hot)} bytes laid out first', file=sys.stderr)
