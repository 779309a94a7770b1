"""Peers and measurement helpers shared by the benchmarks in bench/.

Each peer is a private instance of a real server (Postfix, Dovecot) that runs on loopback
with all its state under a directory the benchmark owns, plus Letterbox itself wrapped the
same way, so that a benchmark can start, load, measure and stop every server alike:
`configure()`, `start()`, `stop()`, and a way to count what was stored. `measure` has the
process tracking (cgroup or process tree), PSS sampling and CPU accounting; `smtp_source`
the SMTP load generator.
"""
