"""Renders bench/run.sh's figures (one JSON object a line) as the results section of BENCHMARKS.md.

Only the part between the results markers is rewritten, so the hand-written analysis around it
stays; a missing file is created with the markers alone.

    python3 bench/report.py results.jsonl "bench/run.sh" BENCHMARKS.md
    python3 bench/report.py --cost results.jsonl      # only the CPU-per-event table, printed
"""

import datetime
import json
import os
import platform
import subprocess
import sys

BEGIN = "<!-- results:begin (written by bench/report.py; edit outside these markers) -->"
END = "<!-- results:end -->"


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = sh("git", "-C", root, "rev-parse", "--short", "HEAD")
    dirty = " + uncommitted changes" if sh("git", "-C", root, "status", "--porcelain") else ""
    return {
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": f"{mem_gib:.0f} GiB",
        "kernel": platform.release(),
        "postgres": sh("psql", "--version"),
        "sqlite": sh("sqlite3", "--version").split(" ")[0],
        "mysql": sh("mysql", "-N", "-h127.0.0.1", "-uroot", "-e", "SELECT VERSION()"),
        "node": sh("node", "--version"),
        "rustc": sh("rustc", "--version"),
        "commit": commit + dirty,
        "load": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else [],
    }


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def per_thousand(r, key):
    return r[key] / r["accepted"] * 1000 if r.get("accepted") else None


def cost_table(rows):
    """CPU per event, end to end: each load's CPU time over the events it got handled."""
    loads = [r for r in rows if r.get("kind") == "load" and "cpu_target_s" in r]
    node = {r["c"]: r for r in loads if r["system"] == "node"}
    out = [
        "| server | engine | concurrency | events | CPU-s per 1,000 events: server | database | total "
        "| × Node | handled events/s, end to end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {"billing-service": 0, "node": 1, "http-floor": 2}
    engines = {"postgres": 0, "mysql": 1, "sqlite": 2, "none": 3}
    for r in sorted(loads, key=lambda r: (order.get(r["system"], 9), engines.get(r["engine"], 9), r["c"])):
        total = per_thousand(r, "cpu_target_s") + per_thousand(r, "cpu_db_s")
        base = node.get(r["c"])
        ratio = "–"
        if base and base["accepted"]:
            base_total = per_thousand(base, "cpu_target_s") + per_thousand(base, "cpu_db_s")
            ratio = f"{total / base_total:.2f}×" if base_total else "–"
        out.append(
            f"| {r['system']} | {r['engine']} | {r['c']} | {r['accepted']:,} "
            f"| {per_thousand(r, 'cpu_target_s'):.3f} | {per_thousand(r, 'cpu_db_s'):.3f} | {total:.3f} "
            f"| {ratio} | {fmt(r['accepted'] / r['handled_s'])} |")
    return out


def render(rows, command):
    by = lambda **kw: [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
    one = lambda **kw: (by(**kw) or [None])[0]
    m = machine()
    out = []
    w = out.append
    w(BEGIN)
    w("")
    w(f"Run `{command}` on {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, commit {m['commit']}.")
    w("")
    w(f"Machine: {m['cpu']}, {m['memory']}, Linux {m['kernel']}; {m['postgres']}; MySQL server {m['mysql']}; SQLite {m['sqlite']};")
    w(f"Node {m['node']}; {m['rustc']}. Load average at the end of the run: {' '.join(m['load'])}.")
    w("The load generator (`stripe-setup trigger`), the server under test and the database share the two cores.")
    w("")

    crit = {r["name"]: float(r["ns"]) for r in by(kind="criterion")}
    node_load = {r["c"]: r for r in by(kind="load", system="node")}
    w("### Events accepted (`stripe-setup trigger charge.succeeded`)")
    w("")
    w("| server | engine | concurrency | events/s | p50 ms | p99 ms | peak RSS MiB | failed | × Node "
      "| pending for the worker at the end | worker done after s | processed/s, load + catch-up |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for system in ("billing-service", "node", "http-floor"):
        for engine in ("postgres", "mysql", "sqlite", "none"):
            for r in sorted(by(kind="load", system=system, engine=engine), key=lambda r: r["c"]):
                base = node_load.get(r["c"])
                ratio = f"{r['eps'] / base['eps']:.1f}×" if base and base["eps"] else "–"
                worker = "| – | – | – |"
                if system == "billing-service" and "catchup_ms" in r:
                    total_s = r["elapsed_s"] + r["catchup_ms"] / 1000
                    worker = (f"| {r['pending_at_end']:,} | {r['catchup_ms'] / 1000:.1f} "
                              f"| {fmt(r['accepted'] / total_s)} |")
                w(f"| {system} | {engine} | {r['c']} | {fmt(r['eps'])} | {r['p50']:.2f} | {r['p99']:.2f} "
                  f"| {r['rss_kib'] / 1024:.1f} | {r['failed']} | {ratio} {worker}")
    w("")
    w("`http-floor` is the service's HTTP stack (tokio, hyper, axum) answering each request at once "
      "(`billing-service/examples/http_floor.rs`: no signature, no parsing, no database): what the "
      "load generator and loopback HTTP alone allow on this machine.")
    w("")
    w("events/s counts deliveries answered 2xx, each committed before its answer. On PostgreSQL and "
      "SQLite a charge is handled in the transaction that stores it; on MySQL the worker handles "
      "the events meanwhile, as in production. What was not handled when the load ended is in the "
      "last three columns (the catch-up is polled every 20 ms), and the next load starts after it.")
    w("")
    w("### CPU per event, end to end")
    w("")
    w("The CPU time of the server process and of the database server (`/proc/PID/stat`: user + "
      "system, every thread, and the children a process reaped, so PostgreSQL's exited backends "
      "count too; the load generator excluded), from the start of each load until every accepted "
      "event was handled: for billing-service stored and processed, for the Node "
      "handler and the HTTP floor answered. Handled events/s is over the same span.")
    w("")
    for line in cost_table(rows):
        w(line)
    w("")
    w("Every accepted event was checked afterwards against the table (nothing acknowledged and lost):")
    w("")
    w("| server | engine | acknowledged (incl. warm-up) | rows in stripe_events |")
    w("|---|---|---:|---:|")
    for r in by(kind="stored"):
        w(f"| {r['system']} | {r['engine']} | {int(r['accepted']):,} | {int(r['rows']):,} |")
    w("")

    w("### Start-up, memory, backlog drain")
    w("")
    w("| server | engine | ready after first start (migrations) ms | ready after restart ms | idle RSS MiB | backlog drained | drain events/s |")
    w("|---|---|---:|---:|---:|---:|---:|")
    for system, engines in (("billing-service", ("postgres", "mysql", "sqlite")), ("node", ("postgres",))):
        for engine in engines:
            first = one(kind="ready", system=system, engine=engine, phase="first")
            restart = one(kind="ready", system=system, engine=engine, phase="restart")
            idle = one(kind="idle", system=system, engine=engine)
            drain = one(kind="drain", system=system, engine=engine)
            drained, rate = "–", "–"
            if drain:
                drained = f"{int(drain['processed']):,} of {int(drain['events']):,} in {int(drain['ms']) / 1000:.1f} s"
                rate = fmt(int(drain["processed"]) / (int(drain["ms"]) / 1000))
            w(f"| {system} | {engine} | {first['ms'] if first else '–'} | {restart['ms'] if restart else '–'} "
              f"| {int(idle['rss_kib']) / 1024:.1f} | {drained} | {rate} |" if idle else f"| {system} | {engine} | – | – | – | – | – |")
    w("The drain time runs from the service's start (with the backlog already stored) until no event is pending.")
    w("")

    w("### The floor, measured in the same run")
    w("")
    w("CPU per 4 KiB event (criterion, `cargo bench -p billing-service --bench verify`):")
    w("")
    w("| step | ns per event | events/s on one core |")
    w("|---|---:|---:|")
    for name, label in (("signature", "HMAC-SHA256 signature check"), ("envelope", "envelope parse"),
                        ("verify_delivery", "both, as the service runs them (+ body copy)")):
        if name in crit:
            w(f"| {label} | {fmt(crit[name])} | {fmt(1e9 / crit[name])} |")
    w("")
    w("Bare `INSERT ... ON CONFLICT (id) DO NOTHING` of the same payload into the service's `stripe_events` "
      "(same indexes), by pgbench (`-M prepared`), PostgreSQL:")
    w("")
    w("| rows per commit | clients | commits/s | rows/s | latency avg ms |")
    w("|---:|---:|---:|---:|---:|")
    floor = {}
    for r in sorted(by(kind="floor"), key=lambda r: (r["variant"], int(r["c"]))):
        rows_s = float(r["tps"]) * int(r["rows_per_tx"])
        floor[(r["variant"], int(r["c"]))] = rows_s
        w(f"| {r['rows_per_tx']} | {r['c']} | {fmt(float(r['tps']))} | {fmt(rows_s)} | {r['latency_ms']} |")
    w("")
    w("The service as a fraction of its floor (PostgreSQL):")
    w("")
    http_floor = {r["c"]: r["eps"] for r in by(kind="load", system="http-floor")}
    w("| concurrency | service events/s | ÷ one-row-per-commit INSERTs | ÷ 256-rows-per-commit INSERTs | ÷ CPU floor (2 cores ÷ verify_delivery) | ÷ HTTP floor |")
    w("|---:|---:|---:|---:|---:|---:|")
    cpu_floor = 2e9 / crit["verify_delivery"] if "verify_delivery" in crit else None
    for r in sorted(by(kind="load", system="billing-service", engine="postgres"), key=lambda r: r["c"]):
        single = floor.get(("single", r["c"]))
        batch = floor.get(("batch", r["c"]))
        share = lambda base, digits: f"{r['eps'] / base:.{digits}f}" if base else "–"
        w(f"| {r['c']} | {fmt(r['eps'])} | {share(single, 2)} | {share(batch, 3)} | {share(cpu_floor, 3)} "
          f"| {share(http_floor.get(r['c']), 2)} |")
    w("")

    w("### Targets")
    w("")
    svc64 = one(kind="load", system="billing-service", engine="postgres", c=64)
    node64 = node_load.get(64)
    drain = one(kind="drain", system="billing-service", engine="postgres")
    idle = one(kind="idle", system="billing-service", engine="postgres")
    restart = one(kind="ready", system="billing-service", engine="postgres", phase="restart")
    first = one(kind="ready", system="billing-service", engine="postgres", phase="first")
    stored_ok = all(int(r["accepted"]) <= int(r["rows"]) for r in by(kind="stored", system="billing-service"))
    checks = []
    if svc64 and node64:
        checks.append(("≥ 10× the Node handler's events/s at concurrency 64",
                       f"{svc64['eps'] / node64['eps']:.1f}× ({fmt(svc64['eps'])} vs {fmt(node64['eps'])})",
                       svc64["eps"] >= 10 * node64["eps"]))
        checks.append(("≥ 14,000 events/s at concurrency 64", fmt(svc64["eps"]), svc64["eps"] >= 14000))
        checks.append(("p99 ≤ 10 ms at concurrency 64", f"{svc64['p99']:.2f} ms", svc64["p99"] <= 10))
    if svc64 and "cpu_target_s" in svc64:
        cost = per_thousand(svc64, "cpu_target_s") + per_thousand(svc64, "cpu_db_s")
        checks.append(("≤ 0.10 CPU-s per 1,000 events stored and processed, at concurrency 64",
                       f"{cost:.3f}", cost <= 0.10))
        checks.append(("nothing pending 1 s after the concurrency-64 load ends",
                       f"{svc64['catchup_ms'] / 1000:.2f} s", svc64["catchup_ms"] <= 1000))
    floor64 = one(kind="load", system="http-floor", c=64)
    if svc64 and floor64:
        checks.append(("accepted events/s ≥ 0.4 × the HTTP floor at concurrency 64",
                       f"{svc64['eps'] / floor64['eps']:.2f}×", svc64["eps"] >= 0.4 * floor64["eps"]))
    if drain:
        rate = int(drain["processed"]) / (int(drain["ms"]) / 1000)
        checks.append(("backlog drained at ≥ 5,000 events/s", f"{fmt(rate)}/s", rate >= 5000))
    if idle:
        checks.append(("idle RSS ≤ 20 MiB", f"{int(idle['rss_kib']) / 1024:.1f} MiB", int(idle["rss_kib"]) <= 20 * 1024))
    if first:
        checks.append(("ready in ≤ 200 ms (first start, migrations)", f"{first['ms']} ms", int(first["ms"]) <= 200))
    if restart:
        checks.append(("ready in ≤ 200 ms (restart)", f"{restart['ms']} ms", int(restart["ms"]) <= 200))
    checks.append(("every acknowledged event stored", "yes" if stored_ok else "NO", stored_ok))
    w("| target (PostgreSQL) | measured | met |")
    w("|---|---:|:---:|")
    for name, value, ok in checks:
        w(f"| {name} | {value} | {'yes' if ok else '**no**'} |")
    w("")
    floor64 = http_floor.get(64)
    if floor64 and node64:
        w(f"For scale: at concurrency 64 the HTTP floor answered {fmt(floor64)} requests/s, "
          f"{floor64 / node64['eps']:.1f}× the Node handler, while 10× the Node handler is "
          f"{fmt(10 * node64['eps'])}/s; the service reached {svc64['eps'] / floor64:.2f} of the floor."
          if svc64 else "")
        w("")
    w(END)
    return "\n".join(out)


def read(path):
    rows = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if "c" in r:
            r["c"] = int(r["c"])
        rows.append(r)
    return rows


def main():
    if sys.argv[1] == "--cost":
        print("\n".join(cost_table(read(sys.argv[2]))))
        return
    path, command, target = sys.argv[1:4]
    rows = read(path)
    section = render(rows, command)
    text = open(target).read() if os.path.exists(target) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(target, "w").write(text)
    print(section)


if __name__ == "__main__":
    main()
