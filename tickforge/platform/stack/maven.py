"""Java services from Maven Central: a JDK on this machine, and a jar classpath resolved with
``mvn dependency:copy-dependencies`` from a pom shipped in ``resources/`` (no tarball download).

A resolved classpath folder carries the fingerprint of its pom; a changed pom re-resolves.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from importlib.resources.abc import Traversable
from pathlib import Path

from tickforge.platform.stack.base import StackError
from tickforge.platform.stack.process import run_checked
from tickforge.platform.stack.state import file_lock

MIN_JAVA = 17
_COMPLETE_MARKER = ".tickforge-classpath"


def java_help(service: str) -> str:
    return f"{service} needs Java {MIN_JAVA}+: apt-get install openjdk-17-jre-headless"


def maven_help(service: str) -> str:
    return f"{service}'s jars are fetched from Maven Central with Maven: apt-get install maven"


def classpath_fingerprint(pom: Traversable) -> str:
    """Identifies the pom a jar cache was resolved from."""
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def classpath_ready(lib_dir: Path, pom: Traversable) -> bool:
    marker = lib_dir / _COMPLETE_MARKER
    return marker.exists() and marker.read_text().strip() == classpath_fingerprint(pom)


def ensure_classpath(lib_dir: Path, pom: Traversable, service: str) -> bool:
    """Resolve the pom's runtime jars into ``lib_dir`` unless already there; True if it resolved.

    Resolution goes to a temporary folder that replaces ``lib_dir`` only when complete, so an
    interrupted ``mvn`` never leaves a half classpath behind. Maven keeps ``~/.m2`` as its cache.
    """
    if classpath_ready(lib_dir, pom):
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(maven_help(service))
    lib_dir.parent.mkdir(parents=True, exist_ok=True)
    # The cache may be shared by several state dirs (tests): one resolver at a time.
    with file_lock(lib_dir.parent / f".{lib_dir.name}.lock"):
        if classpath_ready(lib_dir, pom):
            return False
        with tempfile.TemporaryDirectory(dir=lib_dir.parent, prefix=".resolve-") as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_bytes(pom.read_bytes())
            out = work / "lib"
            run_checked(
                [
                    mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(work / "pom.xml"),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={out}",
                    "-DincludeScope=runtime",
                ],
                what=f"Resolving {service}'s jars with Maven",
                cwd=work,
            )
            (out / _COMPLETE_MARKER).write_text(classpath_fingerprint(pom) + "\n")
            if lib_dir.exists():
                shutil.rmtree(lib_dir)
            os.replace(out, lib_dir)
    return True


def java_major_version(version_output: str) -> int | None:
    """``openjdk version "17.0.15"`` -> 17; ``java version "1.8.0_392"`` -> 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java(service: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise StackError(java_help(service))
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA:
        raise StackError(f"{java_help(service)} (found {java}: Java {major or 'unknown'})")
    return java
