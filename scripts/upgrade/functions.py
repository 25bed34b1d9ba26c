"""Print the CREATE FUNCTION statements (with their COMMENT) of the named
functions from src/sql/: "name" as CREATE OR REPLACE (a function 1.0 had),
"=name" as a plain CREATE (a new one).  Used by regen-1.0--1.1.sh."""
import glob
import os
import re

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
src = ''.join(open(f).read() for f in sorted(glob.glob(os.path.join(REPO, 'src', 'sql', '*.sql'))))
def fn(name, replace=True, with_comment=True):
    # find "CREATE FUNCTION event_bus.NAME(" and its end
    i=src.index("CREATE FUNCTION event_bus.%s(" % name)
    # end: for C functions, ends at first ";\n" after "LANGUAGE C"; for others "$$;\n" or "$gen$;\n"
    body=src[i:]
    m=re.search(r"\nAS (\$\w*\$)", body)
    if m and (body.find("'MODULE_PATHNAME'")<0 or m.start()<body.find("'MODULE_PATHNAME'")):
        tag=m.group(1)
        j=body.index("\n"+tag+";\n", m.end())+len("\n"+tag+";\n")
    else:
        j=body.index(";\n")+2
    text=body[:j]
    if replace:
        text=text.replace("CREATE FUNCTION","CREATE OR REPLACE FUNCTION",1)
    out=text
    if with_comment:
        k=src.find("COMMENT ON FUNCTION event_bus.%s(" % name, i)
        if k>=0 and k < i+j+5:
            kend=src.index("';\n",k)+3
            out+=src[k:kend]
    return out
import sys
for a in sys.argv[1:]:
    if a.startswith('='):
        print(fn(a[1:], replace=False))
    else:
        print(fn(a))
