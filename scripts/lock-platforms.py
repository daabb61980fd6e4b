#!/usr/bin/env python3
"""Keep package-lock.json valid for `npm ci` on this registry.

The registry reachable here lacks some other platforms' optional packages (e.g. @matrixai/quic-darwin-arm64,
some @rollup/rollup-* builds). `npm install` then leaves them out of the lock, and `npm ci` refuses the lock
("Missing: … from lock file"). This adds each missing one as an optional entry with its os/cpu/libc, so `npm ci`
validates and skips it on platforms it does not fit. Run it after any `npm install` that rewrites the lock:

    python3 scripts/lock-platforms.py
"""
import json, re, subprocess, sys

LOCK = "package-lock.json"
OS = ["darwin", "win32", "linux", "freebsd", "android", "openharmony", "openbsd", "sunos", "aix", "netbsd"]
CPU = ["arm64", "x64", "arm", "ia32", "loong64", "ppc64", "riscv64", "s390x", "mips64el", "mipsel", "ppc"]

out = subprocess.run(["npm", "ci", "--dry-run"], capture_output=True, text=True)
missing = re.findall(r"Missing: (\S+?)@\S* from lock file", out.stdout + out.stderr)
if not missing:
    print("package-lock.json is valid for npm ci")
    sys.exit(0)

lock = json.load(open(LOCK))
packages = lock["packages"]

def spec_for(name):
    for entry in packages.values():
        version = (entry.get("optionalDependencies") or {}).get(name)
        if version:
            return version
    sys.exit(f"{name} is missing but no package lists it as optional: run npm install")

for name in missing:
    parts = name.split("/")[-1].split("-")
    os_ = [p for p in parts if p in OS][:1]
    cpu = [p for p in parts if p in CPU]
    if "universal" in parts and not cpu:
        cpu = ["arm64", "x64"]
    if not os_ and not cpu:
        sys.exit(f"cannot tell the platform of {name}")
    entry = {"version": spec_for(name), "optional": True}
    if os_:
        entry["os"] = os_
    if cpu:
        entry["cpu"] = cpu
    if os_ == ["linux"] and ("musl" in parts or "musleabihf" in parts):
        entry["libc"] = ["musl"]
    elif os_ == ["linux"] and ("gnu" in parts or "gnueabihf" in parts):
        entry["libc"] = ["glibc"]
    packages[f"node_modules/{name}"] = entry

lock["packages"] = {k: packages[k] for k in sorted(packages, key=lambda k: (k != "", k))}
with open(LOCK, "w") as f:
    json.dump(lock, f, indent=2)
    f.write("\n")
print(f"added {len(missing)} optional platform entries to {LOCK}")
