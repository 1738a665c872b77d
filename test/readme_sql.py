#!/usr/bin/python3
"""readme_sql.py - every ```sql block of README.md, in order, as one psql
script (for test/t/99_readme.sql), with the README's example token path
replaced by a directory of the test's.

    readme_sql.py README.md TOKEN_DIR > readme.sql
    readme_sql.py README.md --settings    the settings of its table, sorted
"""
import re
import sys

readme, token_dir = sys.argv[1], sys.argv[2]
text = open(readme, encoding="utf-8").read()
if token_dir == "--settings":
    table = text[text.index("## Settings"):]
    table = table[:table.index("\n## ")]
    print(",".join(sorted(re.findall(r"^\| `(ade\.[a-z_]+)` \|", table, flags=re.M))))
    sys.exit(0)
blocks = re.findall(r"^```sql\n(.*?)^```", text, flags=re.S | re.M)
if not blocks:
    sys.exit("readme_sql: no sql blocks in " + readme)
out = []
for i, b in enumerate(blocks, 1):
    out.append("-- README block %d\n%s" % (i, b.replace("/var/lib/postgresql/abm/", token_dir.rstrip("/") + "/")))
sys.stdout.write("\n".join(out))
