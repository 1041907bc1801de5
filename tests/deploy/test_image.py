"""deploy/Dockerfile built and run without a Docker engine, on demand (TAILOR_IMAGE_REPLAY=1, as
root with debootstrap and util-linux's unshare, with network access to Debian's mirror and
crates.io; about 7 minutes, so not in the test command). Each stage's instructions run in a chroot
of the Debian its base image is; then the image's command runs as its USER, probed by its
HEALTHCHECK and by a request without a client key.

Every mount is made inside a private mount namespace (`unshare --mount --propagation private`) of
the one command that needs it, so none reaches the host and none outlives its command: deleting
the scratch roots cannot reach through a mount into the host's /dev or toolchain.

Known differences from Docker: the instructions this Dockerfile uses are replayed and any other
fails the test; `.dockerignore` is not applied (test_deploy checks that no COPY source is
ignored); the HEALTHCHECK runs once, without its timeout; the command's ports are the host's
(8080 and 9090 must be free); the Rust toolchain is this machine's rustup toolchain.
"""

import json
import os
import pathlib
import re
import select
import shlex
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

from test_deploy import ROOT, dockerfile_stages, exec_form, keys_env

# The base images the Dockerfile names, as debootstrap builds their Debian: the build image
# (buildpack-deps underneath) by the buildd variant plus what buildpack-deps adds that the build
# could reach for, the slim image by minbase.
DEBIAN_IMAGES = {"rust:1-bookworm": ("buildd", "curl,ca-certificates,git"), "debian:bookworm-slim": ("minbase", None)}
REPLAY = os.environ.get("TAILOR_IMAGE_REPLAY") == "1"
HANDLED = {"FROM", "WORKDIR", "COPY", "RUN", "USER", "HEALTHCHECK", "EXPOSE", "ENTRYPOINT", "CMD"}


def private(argv):
    """argv in a mount namespace of its own: what it mounts stays there and ends with it."""
    return ["unshare", "--mount", "--propagation", "private", *argv]


class Root:
    """One stage's Debian root: the environment of its image, and commands run inside it."""

    def __init__(self, path, image):
        self.path, self.image = path, image
        self.toolchain = None
        variant, include = DEBIAN_IMAGES[image]
        cmd = ["debootstrap", f"--variant={variant}"] + ([f"--include={include}"] if include else [])
        done = subprocess.run(private(cmd + ["bookworm", str(path), "http://deb.debian.org/debian"]),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        shutil.copy("/etc/resolv.conf", path / "etc/resolv.conf")
        path_var = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.env = {"HOME": "/root", "PATH": path_var}
        if image.startswith("rust:"):  # the Rust image's environment, this machine's toolchain bound in
            sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
            # a distro rustc's sysroot is /usr: bound over the root's own, it would hide its tools
            assert "/toolchains/" in sysroot, f"needs a rustup toolchain, not {sysroot}"
            self.toolchain = sysroot
            (path / "usr/local/rust").mkdir(parents=True, exist_ok=True)
            self.env.update(CARGO_HOME="/usr/local/cargo", PATH="/usr/local/rust/bin:" + path_var)
            # a network that inspects TLS (this machine's does) needs its CA for cargo's downloads,
            # as a docker build there would: the host's bundle, when SSL_CERT_FILE names one (the
            # runtime stage keeps its own bundle: what the image ships is what is checked)
            host_ca = os.environ.get("SSL_CERT_FILE")
            if host_ca and os.path.isfile(host_ca):
                shutil.copy(host_ca, path / "etc/ssl/host-ca.pem")
                self.env.update(SSL_CERT_FILE="/etc/ssl/host-ca.pem", CARGO_HTTP_CAINFO="/etc/ssl/host-ca.pem")

    def command(self, argv, user, extra_env=()):
        """argv inside the root as `user` (uid:gid), with /proc, /dev and the toolchain mounted
        for it alone. The shell and chroot exec in turn: the process is argv's own."""
        r = shlex.quote(str(self.path))
        mounts = [f"mount -t proc proc {r}/proc", f"mount --rbind /dev {r}/dev"]
        if self.toolchain:
            mounts += [f"mount --bind {shlex.quote(self.toolchain)} {r}/usr/local/rust",
                       f"mount -o remount,bind,ro {r}/usr/local/rust"]
        env = [f"{k}={v}" for k, v in {**self.env, **dict(extra_env)}.items()]
        script = " && ".join(mounts) + f' && exec chroot --userspec={shlex.quote(user)} {r} /usr/bin/env -i "$@"'
        return private(["sh", "-c", script, "sh", *env, *argv])


def copy_into(src, root, dest, workdir):
    """Docker's COPY: a directory's contents into dest; a file into dest when it ends in `/`, else
    as dest."""
    to = root / pathlib.PurePosixPath(workdir, dest).relative_to("/")
    if src.is_dir():
        shutil.copytree(src, to, symlinks=True, dirs_exist_ok=True)
    elif dest.endswith("/"):
        to.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, to / src.name)
    else:
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, to)


def refused_without_key():
    """The API's answer to a chat request without a client key: (status, error code)."""
    req = urllib.request.Request("http://127.0.0.1:8080/v1/chat/completions", data=b'{"model":"gpt-4o","messages":[]}',
                                 headers={"content-type": "application/json"})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through http_proxy
    try:
        direct.open(req, timeout=10)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]["code"]
    return 200, None


@pytest.mark.skipif(not REPLAY, reason="TAILOR_IMAGE_REPLAY=1 replays the Dockerfile in Debian chroots (root, debootstrap, about 7 minutes)")
def test_the_image_builds_and_runs_in_debian_chroots():
    assert shutil.which("debootstrap") and shutil.which("unshare") and os.geteuid() == 0, \
        "needs root, debootstrap and unshare"
    for port in (8080, 9090):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is taken: the image's command listens there"
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="tailor-image-"))
    roots, proc = {}, None
    try:
        for i, stage in enumerate(dockerfile_stages()):
            unknown = {op for op, _ in stage} - HANDLED
            assert not unknown, f"the replay does not know {unknown}: teach it before trusting it"
            parts = re.split(r"\s+as\s+", stage[0][1], flags=re.I)
            image, alias = parts[0], parts[1] if len(parts) > 1 else f"stage{i}"
            root = roots[alias] = Root(scratch / alias, image)
            workdir, user, healthcheck = "/", "0:0", None
            for op, args in stage[1:]:
                if op == "WORKDIR":
                    assert args.startswith("/"), f"WORKDIR {args}: relative"
                    workdir = args
                    (root.path / args.lstrip("/")).mkdir(parents=True, exist_ok=True)
                elif op == "COPY":
                    frm = re.match(r"--from=(\S+)\s+", args)
                    *srcs, dest = args[frm.end():].split() if frm else args.split()
                    assert not any(s.startswith("--") for s in srcs), f"COPY {args}: a flag the replay does not know"
                    for src in srcs:
                        base = roots[frm.group(1)].path / src.lstrip("/") if frm else ROOT / src
                        copy_into(base, root.path, dest, workdir)
                elif op == "RUN":  # the shell form: /bin/sh -c, in WORKDIR, as USER
                    done = subprocess.run(root.command(["sh", "-c", f"cd {workdir} && {args}"], user),
                                          capture_output=True, text=True)
                    assert done.returncode == 0, f"RUN {args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                elif op == "USER":
                    user = args
                elif op == "HEALTHCHECK":
                    healthcheck = args[args.index("CMD ") + 4:]
        # the last stage is the image: its command, as its user, with every key keys.env names
        argv = exec_form(stage, "ENTRYPOINT") + exec_form(stage, "CMD")
        proc = subprocess.Popen(root.command(argv, user, keys_env().items()),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("tailor listening on http://0.0.0.0:8080"):
            proc.kill()
            pytest.fail(f"no listening line within 30 s: {line!r}\n{proc.stderr.read()[-3000:]}")
        probe = subprocess.run(root.command(["sh", "-c", healthcheck], user), capture_output=True, text=True)
        assert probe.returncode == 0, f"HEALTHCHECK {healthcheck}: {probe.stdout} {probe.stderr}"
        assert refused_without_key() == (401, "invalid_api_key")
        # the process is tailor's own (each wrapper execs the next): not root, and USER's uid
        uid = re.search(r"^Uid:\s+(\d+)", pathlib.Path(f"/proc/{proc.pid}/status").read_text(), re.M).group(1)
        assert uid != "0" and uid == user.split(":")[0], f"runs as uid {uid}, USER says {user}"
    finally:
        if proc:
            proc.kill()
            proc.wait(timeout=60)
        # nothing is mounted in the host's namespace; --one-file-system all the same
        subprocess.run(["rm", "-rf", "--one-file-system", str(scratch)], check=False)
