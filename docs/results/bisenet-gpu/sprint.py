"""GPU sprint: probe s/epoch of 4 concurrent BiSeNet runs, size their epochs to the time left, train, bench, pack."""
import csv, os, shutil, subprocess, sys, tarfile, time
from pathlib import Path

T0 = time.time()
DEADLINE = float(os.environ.get("DEADLINE", 540))   # seconds after start by which everything is packed
DATA = Path(os.environ.get("DATA", ".gpudata"))
OUT = Path(os.environ["OUT"])
WORK = Path(os.environ.get("WORK", "/tmp/sprint"))
EXTRA = os.environ.get("EXTRA", "").split()
ONLY = os.environ.get("ONLY", "").split()
MAXEP = int(os.environ.get("MAXEP", 400))
ADAM = ["optimizer=adam", "lr=0.005", "weight_decay=0.0002"]
RUNS = {
    "camvid-sgd": ("recipes/camvid-bisenet.yaml", DATA / "camvid", []),
    "camvid-adam": ("recipes/camvid-bisenet.yaml", DATA / "camvid", ADAM),
    "portrait-sgd": ("recipes/portrait-bisenet.yaml", DATA / "portrait", []),
    "portrait-adam": ("recipes/portrait-bisenet.yaml", DATA / "portrait", ADAM),
}
if ONLY:
    RUNS = {k: v for k, v in RUNS.items() if k in ONLY}
LOG = open(OUT / "sprint.log", "a")
ENV = dict(os.environ, OMP_NUM_THREADS="2", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")


def log(*a):
    line = f"[{time.time() - T0:6.1f}s] " + " ".join(str(x) for x in a)
    print(line, flush=True); LOG.write(line + "\n"); LOG.flush()


def launch(name, out, sets):
    recipe, data, variant = RUNS[name]
    cmd = [sys.executable, "-m", "segcore", "train", "--recipe", recipe, "--data", str(data), "--out", str(out)]
    for s in variant + sets + EXTRA:
        cmd += ["--set", s]
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=open(str(out) + ".log", "w"), stderr=subprocess.STDOUT, env=ENV)


def rows(run):
    path = run / "metrics.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def wait(procs, kill_at):
    while any(p.poll() is None for p in procs.values()):
        if time.time() - T0 > kill_at:
            for n, p in procs.items():
                if p.poll() is None:
                    log("killing", n, "at the deadline"); p.kill()
            break
        time.sleep(2)
    return {n: p.wait() for n, p in procs.items()}


# 1. probe: 2 epochs each, all at once (the same contention as the real runs)
procs = {n: launch(n, WORK / "probe" / n, ["epochs=2", "val_every=2"]) for n in RUNS}
codes = wait(procs, DEADLINE * 0.35)
per_epoch = {}
for n in RUNS:
    r = rows(WORK / "probe" / n)
    if codes[n] != 0 or len(r) < 2:
        log("probe failed", n, codes[n], open(str(WORK / "probe" / n) + ".log").read()[-3000:]); continue
    per_epoch[n] = float(r[1]["seconds"]) - float(r[0]["seconds"])
    log("probe", n, "epoch1", r[0]["seconds"], "epoch2", r[1]["seconds"], "s/epoch", round(per_epoch[n], 2))
# 2. train: epochs sized to the time left (minus bench + packing), a multiple of 10
budget = DEADLINE - (time.time() - T0) - 75
procs, epochs = {}, {}
for n, s in per_epoch.items():
    epochs[n] = max(10, min(MAXEP, int(budget / (s * 1.08) // 10 * 10)))
    procs[n] = launch(n, WORK / n, [f"epochs={epochs[n]}"])
log("training", epochs, "budget", round(budget))
codes = wait(procs, DEADLINE - 60)
log("exit codes", codes)
# 3. GPU throughput
bench = open(OUT / "bench.txt", "w")
for args in (["--size", "360", "480", "--batch", "1"], ["--size", "360", "480", "--batch", "16"],
             ["--size", "224", "224", "--batch", "1"], ["--size", "224", "224", "--batch", "32"]):
    if time.time() - T0 > DEADLINE - 30:
        break
    cmd = [sys.executable, "-m", "segcore", "bench", "--models", "bisenet", "enet", "sinet", "--device", "cuda",
           "--repeats", "20", *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=40, env=ENV)
        bench.write(" ".join(cmd[1:]) + "\n" + res.stdout + res.stderr[-2000:] + "\n"); bench.flush()
    except subprocess.TimeoutExpired:
        bench.write("timed out: " + " ".join(cmd[1:]) + "\n")
bench.close()
# 4. pack: the better run of each task by its best validation value; all metrics.csv + logs in summary.tar
with tarfile.open(OUT / "summary.tar", "w") as tar:
    for n in RUNS:
        for f in (WORK / n / "metrics.csv", WORK / n / "recipe.yaml", Path(str(WORK / n) + ".log")):
            if f.exists():
                tar.add(f, arcname=f"{n}/{f.name}")
for task in ("camvid", "portrait"):
    best = None
    for n in RUNS:
        if not n.startswith(task) or not (WORK / n / "best").is_dir():
            continue
        key = "miou" if task == "camvid" else "fg_iou"
        values = [float(r[key]) for r in rows(WORK / n) if r.get(key)]
        log(task, n, "val", key, values)
        if values and (best is None or max(values) > best[1]):
            best = (n, max(values))
    if best is None:
        continue
    log("pack", task, best)
    tar_path = WORK / f"{task}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for f in sorted((WORK / best[0]).rglob("*")):
            rel = f.relative_to(WORK / best[0])
            if f.is_file() and rel.parts[0] != "last" and f.name != "trainer_state.pt":
                tar.add(f, arcname=f"{best[0]}/{rel}")
    data = tar_path.read_bytes()
    for i in range(0, len(data), 15 * 2**20):
        (OUT / f"{task}.tar.part{i // (15 * 2**20)}").write_bytes(data[i:i + 15 * 2**20])
log("done")
