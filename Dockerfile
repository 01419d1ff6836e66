# The service image: one image for every node of a cluster (the CPU head and the GPU
# workers), used by `ray up cluster.yaml` (docker.image) and by KubeRay
# (deploy/kuberay/rayservice.yaml). Build and push it under the name both refer to:
#
#   docker build -t registry.example.com/wav2lip-serve:1.0.0 .
#   docker push registry.example.com/wav2lip-serve:1.0.0
#
# Single GPU box: docker run --gpus all -p 8000:8000 -e W2L_WORKER_GPUS=0.25 \
#   registry.example.com/wav2lip-serve:1.0.0

# Official Ray image: Ray 2.60.0 (the version pinned in requirements.txt; head, workers
# and the image must run the same Ray), Python 3.11 (the project's), the GPU flavour
# (CUDA user-space libraries, nvidia runtime ready). User `ray`, home /home/ray.
FROM rayproject/ray:2.60.0-py311-gpu

# torch: requirements.txt pins torch==2.13.0 without a build tag. With this extra index
# pip picks the CUDA build of that exact version (`2.13.0+cu128` sorts above `2.13.0`
# and satisfies the pin). The index must carry the pinned version (PyTorch drops old CUDA
# builds: cu124 stopped at torch 2.6); choose one the hosts' NVIDIA driver supports.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

# The project lives here; `ray start` runs in this directory (the image's WORKDIR), so
# Serve's import_path `serve_app.app:build_app` and the relative paths of
# serve_config.yaml (`checkpoints`, `data`) resolve against it on every node.
WORKDIR /home/ray/app

# Dependencies first, so code changes do not reinstall them (layer cache).
COPY --chown=ray:users requirements.txt ./
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" -r requirements.txt

# The project: the engine, the Serve deployments, the app, its config and personas.
COPY --chown=ray:users wav2lip/ wav2lip/
COPY --chown=ray:users actors/ actors/
COPY --chown=ray:users serve_app/ serve_app/
COPY --chown=ray:users checkpoints/ checkpoints/
COPY --chown=ray:users serve_config.yaml agents.yaml ./

# Shared cache: avatars/ and results/ live on a mount shared by all nodes (EFS/NFS, a
# ReadWriteMany volume) at /mnt/shared/w2l. serve_config.yaml says `data_dir: data`, so
# `data` is a link to the mount; without a mount it is a plain local directory (a single
# box works as is). W2L_DATA_DIR says the same for deployments whose args leave data_dir out.
RUN sudo mkdir -p /mnt/shared/w2l && sudo chown ray:users /mnt/shared/w2l && ln -s /mnt/shared/w2l data
ENV PYTHONPATH=/home/ray/app \
    W2L_DATA_DIR=/mnt/shared/w2l

EXPOSE 8000
# Stand-alone (no cluster): a local Ray on this container and the app on :8000.
# Cluster nodes ignore this: the launcher and KubeRay run `ray start` themselves.
CMD ["python", "-m", "serve_app", "--host", "0.0.0.0", "--port", "8000"]
