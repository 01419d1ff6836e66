"""The deployment files agree with each other and with the project: cluster.yaml (Ray cluster
launcher), deploy/kuberay/rayservice.yaml (KubeRay), Dockerfile, serve_config.yaml and
requirements.txt. Static checks only: nothing is built or started.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster.yaml"
KUBERAY = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SERVE_CONFIG = ROOT / "serve_config.yaml"
REQUIREMENTS = ROOT / "requirements.txt"
SHARED_MOUNT = "/mnt/shared/w2l"
PROJECT_PACKAGES = ("wav2lip", "actors", "serve_app")


# ---- helpers ---------------------------------------------------------------------------
def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def load_kuberay() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(KUBERAY.read_text()) if doc]


def rayservice() -> dict:
    (service,) = [d for d in load_kuberay() if d.get("kind") == "RayService"]
    return service


def pod_specs(service: dict) -> dict[str, dict]:
    """Pod spec by group: 'head' and each worker group's name."""
    cluster = service["spec"]["rayClusterConfig"]
    specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        specs[group["groupName"]] = group["template"]["spec"]
    return specs


def requirement_pins() -> dict[str, str]:
    """``{normalised name: version}`` of requirements.txt's ``name==version`` lines."""
    pins = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        assert m, f"requirements.txt: {raw!r} is not an exact pin (name==version)"
        pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    return pins


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_image_name() -> str:
    """The image the Dockerfile's header says to build (``docker build -t NAME .``)."""
    names = re.findall(r"docker build -t (\S+) \.", DOCKERFILE.read_text())
    assert len(set(names)) == 1, f"the Dockerfile should name its image once in a build line: {names}"
    return names[0]


def ray_version() -> str:
    import ray

    return ray.__version__


# ---- cluster.yaml (ray up) --------------------------------------------------------------
def test_cluster_yaml_matches_rays_launcher_schema():
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    if not schema_path.exists():  # Ray has shipped it for years; say so instead of passing silently
        pytest.skip(f"{schema_path} is not in this Ray installation")
    schema = json.loads(schema_path.read_text())
    cfg = load_cluster()
    jsonschema.validate(cfg, schema)  # required keys, types, no unknown keys where the schema forbids them
    assert set(schema["required"]) <= set(cfg)


def test_cluster_yaml_passes_rays_own_checks():
    """What `ray up` does before contacting the cloud: merge the provider defaults, validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(load_cluster()))
    validate_config(full)  # schema again, head type among node types, sum(min_workers) <= max_workers
    assert full["docker"]["image"] == load_cluster()["docker"]["image"]


def test_cluster_head_is_cpu_only_and_gpu_workers_autoscale():
    cfg = load_cluster()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU") == 0, "the head must offer no GPU, so no LipSyncWorker lands there"
    assert head["resources"].get("CPU", 0) >= 2
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    gpu_types = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types, "a GPU worker node type"
    for t in gpu_types:
        assert t.get("min_workers", 0) == 0 < t["max_workers"] <= cfg["max_workers"]
    # The head's Ray is started without GPUs too, whatever the instance has.
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--num-gpus=0" in head_start


def test_cluster_uses_our_image_and_installs_requirements_in_synced_project():
    cfg = load_cluster()
    assert cfg["docker"]["image"] == dockerfile_image_name()
    assert cfg["docker"]["container_name"]
    # The project directory synced from the repository root, as in the image (WORKDIR).
    (remote,) = [r for r, local in cfg["file_mounts"].items() if local in (".", "./")]
    assert remote == dockerfile_workdir()
    setup = cfg["setup_commands"]
    assert any(f"cd {remote}" in c and "pip install" in c and "-r requirements.txt" in c for c in setup)
    # Ray starts in the project directory on every node (import_path and relative paths).
    for key, flag in (("head_start_ray_commands", "--head"), ("worker_start_ray_commands", "--address=")):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert len(starts) == 1 and flag in starts[0] and f"cd {remote}" in starts[0]


def test_cluster_deploys_the_serve_config_after_ray_starts():
    cfg = load_cluster()
    cmds = cfg["head_start_ray_commands"]
    start = next(i for i, c in enumerate(cmds) if "ray start --head" in c)
    deploy = [i for i, c in enumerate(cmds) if "serve deploy serve_config.yaml" in c]
    assert deploy and deploy[0] > start, "serve deploy needs the running head (setup commands run before Ray)"
    assert not any("serve deploy" in c for c in cfg.get("head_setup_commands", []))


def test_cluster_shares_the_data_dir_mount():
    cfg = load_cluster()
    run = " ".join(cfg["docker"]["run_options"])
    assert f"-v {SHARED_MOUNT}:{SHARED_MOUNT}" in run
    assert f"-e W2L_DATA_DIR={SHARED_MOUNT}" in run
    assert any(SHARED_MOUNT in c and "mount" in c for c in cfg["initialization_commands"])
    # serve_config.yaml's relative `data` is linked to the mount in the synced project.
    assert any(f"ln -sfn {SHARED_MOUNT} data" in c for c in cfg["setup_commands"])
    assert "data" in cfg.get("rsync_exclude", [])


# ---- KubeRay ---------------------------------------------------------------------------
def test_kuberay_manifest_parses_and_is_a_rayservice():
    docs = load_kuberay()
    service = rayservice()
    assert service["apiVersion"] == "ray.io/v1"
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == ray_version()
    claims = [d for d in docs if d.get("kind") == "PersistentVolumeClaim"]
    assert claims and "ReadWriteMany" in claims[0]["spec"]["accessModes"]


def test_kuberay_serve_config_embeds_serve_config_yaml_applications():
    embedded = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    local = yaml.safe_load(SERVE_CONFIG.read_text())
    assert embedded["applications"] == local["applications"]
    assert embedded["http_options"]["port"] == local["http_options"]["port"]
    assert embedded["http_options"]["host"] == "0.0.0.0"  # pods must accept the Serve service's traffic


def test_kuberay_head_has_no_gpu_and_worker_group_has_one_each():
    service = rayservice()
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"].get("num-gpus") == "0"
    specs = pod_specs(service)
    for container in specs["head"]["containers"]:
        for kind in ("requests", "limits"):
            assert "nvidia.com/gpu" not in container.get("resources", {}).get(kind, {})
    gpu_groups = [
        g for g in cluster["workerGroupSpecs"]
        if any(c["resources"]["limits"].get("nvidia.com/gpu") == 1 for c in g["template"]["spec"]["containers"])
    ]  # fmt: skip
    assert gpu_groups
    for g in gpu_groups:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    assert cluster.get("enableInTreeAutoscaling") is True


def test_kuberay_pods_share_the_data_dir_volume():
    for name, spec in pod_specs(rayservice()).items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("W2L_DATA_DIR") == SHARED_MOUNT, name
            mounts = [m for m in c["volumeMounts"] if m["mountPath"] == SHARED_MOUNT]
            assert mounts and "persistentVolumeClaim" in volumes[mounts[0]["name"]], name
            assert c.get("workingDir") == dockerfile_workdir(), name


def test_cluster_yaml_and_kuberay_use_the_same_image():
    image = load_cluster()["docker"]["image"]
    images = {c["image"] for spec in pod_specs(rayservice()).values() for c in spec["containers"]}
    assert images == {image} == {dockerfile_image_name()}


def test_env_overrides_in_deploy_files_are_not_shadowed_by_serve_config_args():
    """Every W2L_* variable the deploy files set must reach Settings (args > env > defaults)."""
    env_vars = set(re.findall(r"-e (W2L_[A-Z_]+)=", " ".join(load_cluster()["docker"]["run_options"])))
    for spec in pod_specs(rayservice()).values():
        for c in spec["containers"]:
            env_vars |= {e["name"] for e in c.get("env", []) if e["name"].startswith("W2L_")}
    args = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0].get("args") or {}
    shadowed = sorted(v for v in env_vars if v[len("W2L_"):].lower().split("__")[0] in args)
    assert not shadowed, f"set in serve_config.yaml args, so these env vars are ignored: {shadowed}"


# ---- Dockerfile --------------------------------------------------------------------------
def dockerfile_workdir() -> str:
    (workdir,) = [args for ins, args in dockerfile_instructions() if ins == "WORKDIR"]
    return workdir


def copied_sources() -> list[str]:
    """Source paths of every COPY (flags like --chown dropped; the last word is the target)."""
    sources = []
    for ins, args in dockerfile_instructions():
        if ins == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    return sources


def test_dockerfile_is_on_the_official_ray_image_of_our_ray_version():
    froms = [args for ins, args in dockerfile_instructions() if ins == "FROM"]
    assert froms == [f"rayproject/ray:{ray_version()}-py311-gpu"]
    assert requirement_pins()["ray"] == ray_version()


def test_dockerfile_installs_every_pinned_requirement():
    """It installs requirements.txt itself (so every pin), after copying it, with CUDA torch."""
    pins = requirement_pins()
    assert {"torch", "ray", "numpy"} <= set(pins)  # the file parsed: nested -r/-c files would fail above
    instructions = dockerfile_instructions()
    copy_req = next(i for i, (ins, _) in enumerate(instructions) if ins == "COPY" and "requirements.txt" in _)
    installs = [i for i, (ins, args) in enumerate(instructions)
                if ins == "RUN" and "pip install" in args and "-r requirements.txt" in args]  # fmt: skip
    assert installs and installs[0] > copy_req
    run = instructions[installs[0]][1]
    assert "--extra-index-url" in run and ("download.pytorch.org/whl/cu" in run or "TORCH_INDEX_URL" in run)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for ins, a in instructions if ins == "ARG" and "=" in a}
    if "TORCH_INDEX_URL" in run:
        assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")


def settings_default_files() -> list[str]:
    """Files the app reads by a relative default path (e.g. agents.yaml): the image needs them."""
    from serve_app.settings import Settings

    defaults = [f.default for f in Settings.model_fields.values() if isinstance(f.default, Path)]
    return [str(p) for p in defaults if not p.is_absolute() and (ROOT / p).is_file()]


def test_dockerfile_copies_the_project_and_dockerignore_keeps_it():
    sources = copied_sources()
    for needed in ("requirements.txt", *PROJECT_PACKAGES, "checkpoints", "serve_config.yaml",
                   *settings_default_files()):
        assert needed in sources, f"the Dockerfile does not COPY {needed}"
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]  # fmt: skip
    for path in ("requirements.txt", "serve_config.yaml", *(f"{p}/__init__.py" for p in PROJECT_PACKAGES)):
        assert (ROOT / path).exists()
        assert not dockerignored(path, patterns), f".dockerignore drops {path}"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, slightly stricter: the last pattern matching the path or a folder above it
    decides, ``!`` re-includes; fnmatch's ``*`` also crosses ``/``, so it errs towards "dropped"."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip().strip("/")
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile_links_data_to_the_shared_mount():
    instructions = dockerfile_instructions()
    assert any(ins == "RUN" and f"ln -s {SHARED_MOUNT} data" in a for ins, a in instructions)
    env = " ".join(a for ins, a in instructions if ins == "ENV")
    assert f"W2L_DATA_DIR={SHARED_MOUNT}" in env and f"PYTHONPATH={dockerfile_workdir()}" in env
