"""Streaming the weights from disk: the build's choices (ports/loaders/stream.c.j2) and the planner's prediction.

A streaming build keeps the run state, the norms and one layer's weights (two with read-ahead) in a fixed budget and
reads every layer, the token's embedding row and the classifier (unless it fits the budget whole) from disk each
token; see docs/streaming.md.
"""


def stream_port(profile, stream):
    """The template's streaming branch: on or off, the default budget (the profile's memory limit in MB, 0: this
    machine's physical memory), and a reader thread where the target has threads and POSIX threads (not Windows 98)."""
    from deploy.fit import memory_limit

    if not stream:
        return {"stream": False, "readahead": False, "stream_budget_mb": 0}
    limit = memory_limit(profile)[0] or 0
    threads = profile.port["threads"] != "none" and profile["os"] != "windows98"
    return {"stream": True, "readahead": threads, "stream_budget_mb": int(limit)}
