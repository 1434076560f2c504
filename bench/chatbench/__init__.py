"""The chat benchmark's parts (``bench/bench_chat.py`` is the command that puts them together).

    load.py        one chat, driven and timed as a client sees it (SSE, JSON or NDJSON)
    drivers.py     many chats: a closed loop of N workers, a burst, a steady arrival rate
    stats.py       percentiles and one phase's summary
    targets.py     the servers: the fake provider, mpchat (and an API key for its /v1),
                   LiteLLM's proxy (pinned version)
    procs.py       child processes: ports, health, /proc CPU and memory, RLIMIT_NOFILE
    throughput.py  scenario: short answers back to back at c=1 and c=64 (the bars)
    surface.py     its mpchat-v1 target (mpchat's /v1 with an API key), and every target in
                   every mode (stream, json) in order
    held.py        scenario: N long answers held open against a slow provider
    held_load.py   the held scenario's load client, run as its own process
    profiling.py   py-spy samples of a server during a phase
    report.py      the figures side by side, the bars, the machine
    report_surface.py  the OpenAI-style targets side by side, the aims for /v1

``bench/`` is put on ``sys.path`` by the scripts; this is not an installed package.
"""
