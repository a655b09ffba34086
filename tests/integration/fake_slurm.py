#!/usr/bin/env python3
"""A stand-in for Slurm's client commands, for tests on machines without a cluster. `sbatch`
runs a job (every array task) at once, in the foreground, when its `afterok` dependencies
completed, and records it as COMPLETED or FAILED; a job whose dependency did not complete is
CANCELLED (DependencyNeverSatisfied), as `--kill-on-invalid-dep=yes` makes Slurm do. `squeue`,
`scancel` and `scontrol show config` answer from the recorded states."""
import json, os, subprocess, sys

STATE = os.path.join(os.environ["FAKE_SLURM_DIR"], "state.json")


def load():
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"next": 100, "jobs": {}}


def save(s):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(s, f)
    os.replace(tmp, STATE)


def ranges(spec):
    out = []
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def sbatch(args):
    opts, wrap = {}, None
    for a in args:
        if a.startswith("--wrap="):
            wrap = a[len("--wrap="):]
        elif a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            opts[k] = v
    s = load()
    jid = str(s["next"])
    s["next"] += 1
    tasks = [str(t) for t in ranges(opts["array"])] if "array" in opts else [""]
    job = {"name": opts.get("job-name", ""), "tasks": {t: ["PENDING", "None"] for t in tasks}}
    s["jobs"][jid] = job
    save(s)
    deps = opts.get("dependency", "")
    ok = all(
        all(st[0] == "COMPLETED" for st in s["jobs"].get(d, {"tasks": {"": ["X", ""]}})["tasks"].values())
        for d in deps.split(":")[1:]
    )
    for t in tasks:
        if not ok:
            job["tasks"][t] = ["CANCELLED", "DependencyNeverSatisfied"]
            continue
        out = opts.get("output", "/dev/null").replace("%A", jid).replace("%a", t).replace("%j", jid)
        env = dict(os.environ, SLURM_JOB_ID=jid)
        if t:
            env.update(SLURM_ARRAY_JOB_ID=jid, SLURM_ARRAY_TASK_ID=t)
        with open(out, "w") as f:
            rc = subprocess.run(["sh", "-c", wrap], cwd=opts.get("chdir", "."), env=env,
                                stdout=f, stderr=subprocess.STDOUT).returncode
        job["tasks"][t] = ["COMPLETED", "None"] if rc == 0 else ["FAILED", "NonZeroExitCode"]
    s = load()
    s["jobs"][jid] = job
    save(s)
    print(jid)


def squeue(args):
    s = load()
    if "-n" in args:
        name = args[args.index("-n") + 1]
        for jid, job in s["jobs"].items():
            if job["name"] == name:
                print(jid)
        return
    ids = args[args.index("-j") + 1].split(",") if "-j" in args else list(s["jobs"])
    known = [i for i in ids if i in s["jobs"]]
    if ids and not known:
        print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
        sys.exit(1)
    for jid in known:
        for t, (state, reason) in s["jobs"][jid]["tasks"].items():
            print(f"{jid}|{t or 'N/A'}|{state}|{reason}")


def main():
    cmd = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    if cmd == "sbatch":
        sbatch([a for a in args if a != "--parsable"])
    elif cmd == "squeue":
        squeue(args)
    elif cmd == "scancel":
        pass  # every job has ended by the time anyone could cancel it
    elif cmd == "scontrol":
        print("MaxArraySize            = 1001")
    else:
        sys.exit(f"fake slurm: unknown command {cmd}")


main()
