#!/usr/bin/env python3
"""The benchmarks' git dependencies: 35 bare repositories shaped like the
real manifest (21 plugins, 8 workspace templates, 6 org templates), each
COMMITS commits on main rewriting all FILES small text files, plus the
manifest.json that lists them and a list for the shell baselines.

    bench-repos.py ROOT MANIFEST REPOS_TXT

ROOT gets org/<name>.git; REPOS_TXT gets one line per repository,
`org/<name>.git <bundle dir>/<name> <ref>`, the bundle dir being the one
`hoist deps` clones that category into.
"""
import json
import os
import subprocess
import sys

COMMITS, FILES = 20, 40
SHAPE = {
    "plugins": ("plugins", ["plugin-%02d" % i for i in range(1, 22)]),
    "workspace_templates": (
        "workspace-configs-templates",
        ["workspace-template-%02d" % i for i in range(1, 9)],
    ),
    "org_templates": ("org-templates", ["org-template-%02d" % i for i in range(1, 7)]),
}
DIRS = ["", "src/", "docs/", "config/"]


def stream(name):
    """A git fast-import stream: COMMITS commits on main, every one of them
    rewriting all FILES files."""
    out = []
    for c in range(1, COMMITS + 1):
        msg = ("%s: commit %d\n" % (name, c)).encode()
        out.append(b"commit refs/heads/main\nmark :%d\n" % c)
        out.append(b"committer bench <bench@example.com> %d +0000\n" % (1700000000 + c * 60))
        out.append(b"data %d\n%s" % (len(msg), msg))
        if c > 1:
            out.append(b"from :%d\n" % (c - 1))
        for i in range(FILES):
            path = "%sfile-%02d.txt" % (DIRS[i % len(DIRS)], i)
            body = "".join(
                "%s %s line %d: commit %d\n" % (name, path, k, c) for k in range(8)
            ).encode()
            out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(body), body))
        out.append(b"\n")
    return b"".join(out)


def main(root, manifest_path, repos_path):
    manifest = {"version": 1}
    lines = []
    for category, (dirname, names) in SHAPE.items():
        manifest[category] = [{"name": n, "repo": "org/%s" % n, "ref": "main"} for n in names]
        for n in names:
            bare = os.path.join(root, "org", "%s.git" % n)
            subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch", "main", bare], check=True)
            subprocess.run(["git", "-C", bare, "fast-import", "--quiet"], input=stream(n), check=True)
            lines.append("org/%s.git %s/%s main\n" % (n, dirname, n))
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
    with open(repos_path, "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: bench-repos.py ROOT MANIFEST REPOS_TXT")
    main(*sys.argv[1:])
