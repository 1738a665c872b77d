#!/usr/bin/python3
"""readme_sql.py README.md --settings: the settings of the README's
settings table, sorted and comma-separated (for test/t/99_readme.sql, which
compares them with what the library defines).  The README's examples are
run by test/readme_run.py."""
import re
import sys

readme = sys.argv[1]
if sys.argv[2:] != ["--settings"]:
    sys.exit("usage: readme_sql.py README.md --settings")
text = open(readme, encoding="utf-8").read()
table = text[text.index("## Settings"):]
table = table[:table.index("\n## ")]
print(",".join(sorted(re.findall(r"^\| `(ade\.[a-z_]+)` \|", table, flags=re.M))))
