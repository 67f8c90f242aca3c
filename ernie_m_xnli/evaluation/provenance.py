"""Where runs ran, as their results.json records it (`environment`), and notes naming the runs that
ran on another machine or other versions than the first: seeds of one table may come from several
machines, but a difference between rows, or a wide spread in one, is then read knowing it."""

# The keys of `environment` that tell one kind of machine from another.
MACHINE_KEYS = ("cpu", "amx", "avx512_bf16", "onednn_max_cpu_isa", "gpu")


def machine_notes(rows):
    """Sentences naming the runs that ran on other machines or versions than the first row's first run,
    one a row and difference (a row of another harness differs in every run the same way). rows:
    [{"name", "runs": [{"dir", "results"}]}]."""
    notes = []
    first_machine, first_versions = _where(rows[0]["runs"][0])
    for row in rows:
        runs_by_difference = {}
        for run in row["runs"]:
            machine, versions = _where(run)
            if machine != first_machine:
                difference = f"ran on another machine: {_describe(machine)} vs {_describe(first_machine)}"
                runs_by_difference.setdefault(difference, []).append(run["dir"])
            differing = sorted(
                k for k in set(versions) | set(first_versions) if versions.get(k) != first_versions.get(k)
            )
            if differing:
                changes = ", ".join(
                    f"{k} {_recorded(first_versions, k)} -> {_recorded(versions, k)}" for k in differing
                )
                runs_by_difference.setdefault(f"ran other versions: {changes}", []).append(run["dir"])
        notes += [f"{row['name']} ({', '.join(dirs)}) {what}" for what, dirs in runs_by_difference.items()]
    return notes


def _where(run):
    environment = run["results"].get("environment") or {}
    return {key: environment.get(key) for key in MACHINE_KEYS}, environment.get("versions", {})


def _recorded(versions, key):
    return "not recorded" if versions.get(key) is None else versions[key]


def _describe(machine):
    units = [unit for unit in ("amx", "avx512_bf16") if machine.get(unit)]
    limit = f", oneDNN limited to {machine['onednn_max_cpu_isa']}" if machine.get("onednn_max_cpu_isa") else ""
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine.get('cpu')} ({', '.join(units) or 'no AMX / AVX512-BF16'}{limit}){gpu}"
