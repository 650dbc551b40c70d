"""Stand-ins for the images critest v1.37.0 pulls, under their original names.

critest names its images by constant (registry.k8s.io/e2e-test-images/...,
gcr.io/k8s-staging-cri-tools/..., registry.k8s.io and k8s.gcr.io/pause). Each stand-in
is pushed to a loopback registry under ``<upstream registry>/<path>:<tag>`` and
``registries_conf()`` mirrors every upstream registry to that namespace, as an operator
mirrors registries for an air-gapped node; RepoTags keep the original names.

The base is Debian's dynamic busybox (package ``busybox``): its ash execs ``/bin/ls``
from PATH where busybox-static (FEATURE_SH_STANDALONE) runs the applet in-process, and
critest's MaskedPaths spec expects ``/bin/sh: ls: Permission denied`` from masking
``/bin/ls``. Neither busybox has ``pgrep`` or ``ipcs``: those are Debian's procps and
util-linux binaries. nginx and httpd are Debian's nginx and apache2-bin; nnp, the
setuid program of the nonewprivs image, is compiled here.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .debian_files import ProgramLayer, unpacked
from .images import DEFAULT_PATH, BuiltImage, Layer, TarBuilder, build_image, host_arch, push

E2E = "registry.k8s.io/e2e-test-images"
STAGING = "gcr.io/k8s-staging-cri-tools"
BUSYBOX = f"{E2E}/busybox:1.29-2"
NGINX = f"{E2E}/nginx:1.14-2"
HTTPD = f"{E2E}/httpd:2.4.39-4"
NONEWPRIVS = f"{E2E}/nonewprivs:1.3"
PAUSE = ("registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9")
HOSTNET_NGINX = f"{STAGING}/hostnet-nginx-{host_arch()}:latest"
HOSTNET_NGINX_PORT = 12003
# critest pins this one by digest: only the upstream manifest bytes have it.
PINNED_BY_DIGEST = (
    f"{STAGING}/test-image-digest@sha256:"
    "9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"
)
UPSTREAMS = ("registry.k8s.io", "k8s.gcr.io", "gcr.io")

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
mail:x:8:
wheel:x:10:root
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:
"""
# test-image-predefined-group: USER 1000, a member of a group only the image defines.
PREDEFINED_PASSWD = PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
PREDEFINED_GROUP = GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"

NNP_C = r"""#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
"""

NGINX_CONF = """user nobody nogroup;
worker_processes 1;
pid /var/run/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log /dev/stdout;
    server {{
        listen {port};
        root /usr/share/nginx/html;
        location / {{ index index.html; }}
    }}
}}
"""
HTTPD_CONF = """ServerRoot /usr/local/apache2
Listen 80
LoadModule mpm_event_module modules/mod_mpm_event.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule dir_module modules/mod_dir.so
LoadModule mime_module modules/mod_mime.so
User www-data
Group www-data
DocumentRoot /usr/local/apache2/htdocs
DirectoryIndex index.html
TypesConfig conf/mime.types
ErrorLog /proc/self/fd/2
LogLevel info
PidFile logs/httpd.pid
"""
HTTPD_MODULES = ("mod_mpm_event.so", "mod_authz_core.so", "mod_dir.so", "mod_mime.so")
PAGE = b"<html><body><h1>It works!</h1></body></html>\n"


@cache
def busybox_layer() -> Layer:
    """The e2e busybox rootfs: Debian's dynamic busybox, its applets in /bin, pgrep, ipcs."""
    root = unpacked("busybox")
    binary = root / "bin" / "busybox"
    applets = subprocess.run(
        [str(binary), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    tb = TarBuilder()
    for d in ("etc", "usr/bin", "usr/sbin", "usr/local/bin", "var/www", "var/spool/mail"):
        tb.dir(d)
    tb.dir("root", mode=0o700)
    tb.dir("home")
    tb.dir("tmp", mode=0o1777)
    for d in ("proc", "sys", "dev", "run", "mnt"):
        tb.dir(d)
    tb.file("etc/passwd", PASSWD.encode())
    tb.file("etc/group", GROUP.encode())
    layer = ProgramLayer(tb).program(binary, "bin/busybox")
    for applet in applets:
        if applet != "busybox":
            tb.hardlink(f"bin/{applet}", "bin/busybox")
    layer.program(Path("/usr/bin/pgrep"), "usr/bin/pgrep")
    tb.hardlink("usr/bin/pkill", "usr/bin/pgrep")
    layer.program(Path("/usr/bin/ipcs"), "usr/bin/ipcs")
    return tb.layer()


def marker(path: str, text: str) -> Layer:
    """A one-file layer that makes an image differ from its siblings."""
    return TarBuilder().file(path, text.encode()).layer()


def busybox_image(*extra: Layer, user: str | None = None) -> BuiltImage:
    """The busybox rootfs plus ``extra`` layers, default command ``sh``."""
    return build_image([busybox_layer(), *extra], {"User": user} if user else None)


@cache
def nginx_layer() -> Layer:
    """Debian's nginx (with its libraries), a page and the directories it writes."""
    root = unpacked("nginx")
    tb = TarBuilder()
    ProgramLayer(tb).program(root / "usr/sbin/nginx", "usr/sbin/nginx")
    for d in ("var/log/nginx", "var/lib/nginx", "var/run", "etc/nginx"):
        tb.dir(d)
    tb.file("usr/share/nginx/html/index.html", PAGE)
    return tb.layer()


def nginx_image(port: int) -> BuiltImage:
    """nginx in the foreground on ``port``; its master process is the container's pid 1."""
    conf = marker("etc/nginx/nginx.conf", NGINX_CONF.format(port=port))
    return build_image(
        [busybox_layer(), nginx_layer(), conf],
        {
            "Cmd": ["nginx", "-g", "daemon off;"],
            "ExposedPorts": {f"{port}/tcp": {}},
            "StopSignal": "SIGQUIT",
        },
    )


@cache
def httpd_layer() -> Layer:
    """Debian's Apache as /usr/local/apache2/bin/httpd (so it logs as httpd), four modules."""
    root = unpacked("apache2-bin")
    tb = TarBuilder()
    layer = ProgramLayer(tb).program(root / "usr/sbin/apache2", "usr/local/apache2/bin/httpd")
    layer.beside_libc("libgcc_s.so.1")  # glibc loads it when a thread exits
    for module in HTTPD_MODULES:
        layer.program(root / "usr/lib/apache2/modules" / module,
                      f"usr/local/apache2/modules/{module}", mode=0o644)
    tb.file("usr/local/apache2/conf/httpd.conf", HTTPD_CONF.encode())
    tb.file("usr/local/apache2/conf/mime.types", b"text/html html\n")
    tb.file("usr/local/apache2/htdocs/index.html", PAGE)
    tb.dir("usr/local/apache2/logs")
    return tb.layer()


def httpd_image() -> BuiltImage:
    """Apache in the foreground on port 80."""
    return build_image(
        [busybox_layer(), httpd_layer()],
        {
            "Env": [DEFAULT_PATH.replace("PATH=", "PATH=/usr/local/apache2/bin:")],
            "Cmd": ["httpd", "-d", "/usr/local/apache2", "-f", "conf/httpd.conf", "-DFOREGROUND"],
            "ExposedPorts": {"80/tcp": {}},
            "StopSignal": "SIGWINCH",
        },
    )


@cache
def nnp_layer() -> Layer:
    """/usr/local/bin/nnp: setuid root, prints its effective uid; built with gcc -static."""
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = Path(tmp) / "nnp.c", Path(tmp) / "nnp"
        source.write_text(NNP_C)
        got = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(source)],
                             capture_output=True, text=True)
        if got.returncode != 0:
            raise RuntimeError(f"gcc could not build nnp (apt-get install gcc libc6-dev): "
                               f"{got.stderr.strip()}")
        return TarBuilder().file("usr/local/bin/nnp", binary.read_bytes(), mode=0o4755).layer()


def pause_image() -> BuiltImage:
    """A pause image: Debian's static catatonit as /pause, in pause mode."""
    layer = TarBuilder().file("pause", Path("/usr/bin/catatonit").read_bytes(), mode=0o755)
    return build_image([layer.layer()], {"Entrypoint": ["/pause", "-P"], "Cmd": None})


def staging_images() -> dict[str, BuiltImage]:
    """gcr.io/k8s-staging-cri-tools stand-ins by reference: busybox plus a marker file."""
    def tagged(name: str, **kw: str) -> BuiltImage:
        return busybox_image(marker(f"etc/{name.replace(':', '-')}", name + "\n"), **kw)

    same = tagged("test-image-tags")
    predefined = busybox_image(
        TarBuilder()
        .file("etc/passwd", PREDEFINED_PASSWD.encode())
        .file("etc/group", PREDEFINED_GROUP.encode())
        .dir("home/default-user", uid=1000, gid=1000)
        .layer(),
        user="1000",
    )
    images = {
        "test-image-latest:latest": tagged("test-image-latest"),
        "test-image-tag:test": tagged("test-image-tag:test"),
        "test-image-tag:all": tagged("test-image-tag:all"),
        **{f"test-image-{n}:latest": tagged(f"test-image-{n}") for n in (1, 2, 3)},
        **{f"test-image-tags:{n}": same for n in (1, 2, 3)},
        "test-image-user-uid:latest": tagged("user-uid", user="1002"),
        "test-image-user-username:latest": tagged("user-username", user="www-data"),
        "test-image-user-uid-group:latest": tagged("user-uid-group", user="1003:1004"),
        "test-image-user-username-group:latest": tagged("username-group", user="www-data:1004"),
        "test-image-predefined-group:latest": predefined,
    }
    out = {f"{STAGING}/{ref}": image for ref, image in images.items()}
    out[HOSTNET_NGINX] = nginx_image(HOSTNET_NGINX_PORT)
    return out


def all_images() -> dict[str, BuiltImage]:
    """Every stand-in by the reference critest uses."""
    pause = pause_image()
    return {
        BUSYBOX: busybox_image(),
        NGINX: nginx_image(80),
        HTTPD: httpd_image(),
        NONEWPRIVS: build_image([busybox_layer(), nnp_layer()], {"Cmd": ["nnp"]}),
        **dict.fromkeys(PAUSE, pause),
        **staging_images(),
    }


@dataclass
class CritestImages:
    """What ``push_critest_images`` pushed: original reference -> image, and the mirror."""

    host: str
    images: dict[str, BuiltImage] = field(default_factory=dict)

    def registries_conf(self, search: bool = True) -> str:
        """registries.conf v2 mirroring each upstream to ``<host>/<upstream>`` (plain HTTP);
        without ``search``, a drop-in that leaves the short-name search list alone."""
        lines = ["unqualified-search-registries = []", ""] if search else []
        for upstream in UPSTREAMS:
            lines += [
                "[[registry]]",
                f'prefix = "{upstream}"',
                f'location = "{upstream}"',
                "[[registry.mirror]]",
                f'location = "{self.host}/{upstream}"',
                "insecure = true",
                "",
            ]
        return "\n".join(lines)


def push_critest_images(host: str) -> CritestImages:
    """Build every stand-in and push it to the registry at ``host`` under its mirror path."""
    pushed = CritestImages(host)
    for ref, image in all_images().items():
        name, _, tag = ref.rpartition(":")
        push(host, name, tag, image)
        pushed.images[ref] = image
    return pushed
