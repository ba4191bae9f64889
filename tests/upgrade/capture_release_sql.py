#!/usr/bin/env python3
"""Captures the SQL a release's PgStore runs, for the upgrade test.

Usage: tests/upgrade/capture_release_sql.py REV > tests/testdata/upgrade/release_sql_REV.txt

Reads PgStore's sources at git revision REV (server/store/pg_*.cc, or
server/pg_store.cc in releases before the layered folders) and prints every
SQL statement written there as one C string literal (or a run of adjacent literals), and
each pqxx::stream_to or stream_from table as the SELECT of its columns, so the upgrade
test can check that the old release's statements still run against the
new schema. Statements assembled at run time with StrCat are skipped (their
literals are fragments); the test's comments name them.

Output: records separated by a line "-- statement: NAME", where NAME is
the kStatements name, the constant's name, or "copy:TABLE".
"""
import re
import subprocess
import sys

SQL_START = re.compile(r'^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|COPY)\b', re.I)


def literal_runs(src):
    """Yields (offset, text) for each run of adjacent C string literals."""
    lit = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
    pos = 0
    while True:
        m = lit.search(src, pos)
        if not m:
            return
        start, parts, end = m.start(), [m.group(1)], m.end()
        while True:
            n = re.compile(r'\s*"((?:[^"\\\n]|\\.)*)"').match(src, end)
            if not n:
                break
            parts.append(n.group(1))
            end = n.end()
        text = ''.join(parts).encode().decode('unicode_escape')
        yield start, end, text
        pos = end


def store_sources(rev):
    """PgStore's source files at `rev`."""
    listed = subprocess.run(['git', 'ls-tree', '--name-only', rev, 'server/store/'],
                            capture_output=True, text=True).stdout.split()
    files = sorted(f for f in listed if re.match(r'server/store/pg_\w+\.cc$', f))
    return files or ['server/pg_store.cc']


def main():
    rev = sys.argv[1]
    files = store_sources(rev)
    src = '\n'.join(subprocess.run(['git', 'show', f'{rev}:{f}'], check=True,
                                   capture_output=True, text=True).stdout for f in files)
    print(f'-- SQL of {" ".join(files)} at {rev}, captured by tests/upgrade/capture_release_sql.py')
    for start, end, text in literal_runs(src):
        if not SQL_START.match(text):
            continue
        before = src[max(0, start - 200):start]
        after = src[end:end + 3]
        if after.lstrip().startswith(',') and 'StrCat' in src[max(0, start - 60):start]:
            continue  # a fragment of a statement built at run time
        name = re.search(r'\{"(\w+)",\s*$', before)
        const = re.search(r'constexpr char (k\w+)\[\] =\s*$', before)
        label = name.group(1) if name else const.group(1) if const else f'inline@{start}'
        print(f'-- statement: {label}')
        print(text)
    for m in re.finditer(r'stream_(?:to|from)\s+\w+\(\s*tx,\s*"(\w+)",\s*std::vector<std::string>\{([^}]*)\}',
                         src):
        cols = ', '.join(re.findall(r'"(\w+)"', m.group(2)))
        print(f'-- statement: copy:{m.group(1)}')
        print(f'SELECT {cols} FROM {m.group(1)} LIMIT 0')


if __name__ == '__main__':
    main()
