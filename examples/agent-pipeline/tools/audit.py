"""The security gate (a stand-in for Snyk or bandit, which need their services or PyPI): no
eval/exec, no shell=True, no pickle of untrusted bytes, and no hard-coded secrets. Prints
`path:line: finding` for each and exits 1 if there is any."""
import re
import sys

RULES = [
    (re.compile(r"\beval\(|\bexec\("), "eval/exec of dynamic code"),
    (re.compile(r"shell\s*=\s*True"), "a subprocess through the shell"),
    (re.compile(r"pickle\.loads?\("), "unpickling (arbitrary code on untrusted input)"),
    (re.compile(r"""(?i)(api_key|secret|token|password)\s*=\s*['"][^'"]{8,}['"]"""),
     "a hard-coded secret"),
]


def main():
    findings = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                for pattern, what in RULES:
                    if pattern.search(line):
                        findings.append("%s:%d: %s" % (path, number, what))
    for finding in findings:
        print(finding)
    print("security: %d files, %d findings" % (len(sys.argv) - 1, len(findings)))
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
