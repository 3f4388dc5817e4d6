"""Measurements shared by the tests and the benchmarks (``experiments/benchmarks/``)."""
import os


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at ``exec`` (``ru_maxrss`` does
    not: a child started by a big parent would report at least the parent's size at fork).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
