"""The broker's jars: Apache Kafka assembled from Maven Central (``assets/pom.xml``) into a cache
shared by every home and test run, once per version; the Java they run on; running a tool
from them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rhythm.stack.kafka.lock import file_lock
from rhythm.stack.kafka.settings import (
    FETCH_MARKER,
    LocalKafkaError,
    LocalKafkaSettings,
    tail_lines,
    write_asset,
)

log = logging.getLogger(__name__)


def dist_dir(settings: LocalKafkaSettings) -> Path:
    """The cache of one Kafka version (its jars in ``lib/``)."""
    return settings.cache_dir / f"kafka-{settings.version}"


def fetch_jars(settings: LocalKafkaSettings) -> Path:
    """The directory of the broker's jars, downloading them with Maven if not cached.

    Concurrent callers (two test runs) serialise on a lock file; the jars are copied into
    a temporary directory and renamed into place, so a half-done download is never used.
    """
    lib = dist_dir(settings) / "lib"
    if (lib / FETCH_MARKER).is_file():
        return lib
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise LocalKafkaError(
            f"Maven ({settings.mvn!r}) is not on PATH; it assembles Kafka from Maven "
            "Central. Install Maven 3.8+ (e.g. `apt-get install maven`) or set "
            "RHYTHM_KAFKA_LOCAL_MVN to its path."
        )
    java_binary(settings)
    pom = write_asset("pom.xml", dist_dir(settings))
    dist = dist_dir(settings)
    dist.mkdir(parents=True, exist_ok=True)
    with file_lock(dist / ".fetch.lock"):
        if (lib / FETCH_MARKER).is_file():  # another process finished it meanwhile
            return lib
        version = settings.version
        log.info("fetching Apache Kafka %s from Maven Central into %s", version, lib)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".lib-", dir=dist))
        try:
            command = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
            ]
            try:
                result = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=settings.fetch_timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise LocalKafkaError(
                    f"mvn did not finish fetching Kafka {version} within "
                    f"{settings.fetch_timeout_s:.0f} s"
                ) from exc
            if result.returncode != 0:
                raise LocalKafkaError(
                    f"mvn failed (exit {result.returncode}) fetching Kafka {version} "
                    f"(is the version on Maven Central? is Maven Central reachable?):\n"
                    + tail_lines(result.stdout + result.stderr)
                )
            jars = sorted(p.name for p in tmp.glob("*.jar"))
            if f"kafka_2.13-{version}.jar" not in jars:
                raise LocalKafkaError(f"mvn ran but kafka_2.13-{version}.jar is not in {tmp}")
            (tmp / FETCH_MARKER).write_text(
                json.dumps({"version": version, "jars": jars}, indent=1) + "\n"
            )
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            if lib.exists():  # a leftover without marker: incomplete, replace it
                shutil.rmtree(lib)
            os.replace(tmp, lib)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info(
            "fetched %d jars for Kafka %s in %.1f s",
            len(jars),
            version,
            time.monotonic() - started,
        )
    return lib


def java_binary(settings: LocalKafkaSettings) -> str:
    """The Java binary the broker and its tools run on; a clear error when it is missing."""
    java = shutil.which(settings.java)
    if java is None:
        raise LocalKafkaError(
            f"Java ({settings.java!r}) is not on PATH; Kafka {settings.version} "
            "needs Java 17+. Install it (e.g. `apt-get install openjdk-17-jre-headless`) "
            "or set RHYTHM_KAFKA_LOCAL_JAVA to its path."
        )
    return java


def run_tool(
    settings: LocalKafkaSettings,
    main_class: str,
    args: list[str],
    timeout: float = 300.0,
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a Java main class from the broker's jars (e.g. a perf tool) and wait for it.

    Tools log warnings only, to stderr (assets/tools-log4j2.yaml); stdout is theirs.
    With ``check`` a non-zero exit raises LocalKafkaError with the output's tail.
    """
    lib = fetch_jars(settings)
    command = [
        java_binary(settings),
        f"-Xmx{settings.tool_heap}",
        "-Djava.awt.headless=true",
        # Numbers in tool output are formatted with the default locale: pin it for parsing.
        "-Duser.language=en",
        "-Duser.country=US",
        f"-Dlog4j2.configurationFile={write_asset('tools-log4j2.yaml', lib.parent)}",
        "-cp",
        f"{lib}/*",
        main_class,
        *args,
    ]
    log.debug("running %s", " ".join(command))
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"{main_class} did not finish within {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise LocalKafkaError(
            f"{main_class} failed (exit {result.returncode}):\n"
            + tail_lines(result.stdout + "\n" + result.stderr)
        )
    return result
