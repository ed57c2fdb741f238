SUMMARY = "pos-agent: keeps a POS terminal registered with its acquirer"
DESCRIPTION = "On-terminal agent that diagnoses and repairs '97 terminal not registered' on \
CUP-style POS terminals: self-check, re-provisioning, sign-in, bounded retry, a journal of \
every transaction, firmware hooks. Runs as the systemd service pos-agent.service."
SECTION = "console/network"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Where the source comes from: the project's git repository. By default the checkout this layer
# lives in (conf/layer.conf); point POS_AGENT_GIT at your mirror in local.conf or a .bbappend.
POS_AGENT_GIT ??= "git://${POS_AGENT_CHECKOUT};protocol=file;branch=main"
# destsuffix=${BP}: the source lands where every release's default S points (scarthgap:
# ${WORKDIR}/${BP}, walnascar moves it there from UNPACKDIR, whinlatter and later:
# ${UNPACKDIR}/${BP}), so the recipe sets no S (whinlatter refuses S = "${UNPACKDIR}/git").
SRC_URI = "${POS_AGENT_GIT};destsuffix=${BP}"
# The release's commit: the commit that set agent.__version__ to PV (this file's name). A commit
# cannot hold its own id, so a release is two commits: the version bump (agent/__init__.py, this
# file's name, POS_AGENT_VERSION of packaging/buildroot), then this line, which
# `python3 packaging/buildtools.py pin-yocto` writes. tests/packaging checks that SRCREV is that
# commit and has every file this recipe takes from ${S}.
SRCREV = "cfc1deabbf808959e44d245f50f3a36d710c6b01"

# pyproject.toml's [build-system] needs setuptools>=61: scarthgap, the oldest release in
# LAYERSERIES_COMPAT, has 69.1.1.
inherit python_setuptools_build_meta systemd useradd

# From pyproject.toml [project].dependencies, with their lower bounds (tests/packaging keeps the
# two lists equal). All pure Python. meta-python has pyserial, platformdirs, ntplib and paho-mqtt;
# pyiso8583 (in no release) and tenacity (before wrynose) come from this layer.
POS_AGENT_PYTHON_DEPS = " \
    python3-pyiso8583 (>= 4.0) \
    python3-pyserial (>= 3.5) \
    python3-tenacity (>= 8.2) \
    python3-platformdirs (>= 2.6) \
    python3-ntplib (>= 0.3.3) \
    python3-paho-mqtt (>= 1.6) \
"
# The standard library's parts the agent imports (oe-core splits python3 along
# meta/recipes-devtools/python/python3/python3-manifest.json; tests/packaging maps the agent's
# imports onto it): hashlib is in crypt, random in math, resource (the descriptor limit) in
# resource, ctypes (adjtimex for the clock check) in ctypes, contextvars (the stage marks) in
# numbers; the GB2312/GB18030 text of the wire
# profile needs codecs (_multibytecodec) and misc (_codecs_cn, in no package of the manifest).
POS_AGENT_STDLIB = " \
    python3-asyncio \
    python3-codecs \
    python3-core \
    python3-crypt \
    python3-ctypes \
    python3-datetime \
    python3-email \
    python3-io \
    python3-json \
    python3-logging \
    python3-math \
    python3-misc \
    python3-netclient \
    python3-numbers \
    python3-resource \
    python3-sqlite3 \
    python3-threading \
    python3-tomllib \
"
RDEPENDS:${PN} += "${POS_AGENT_PYTHON_DEPS} ${POS_AGENT_STDLIB}"

# The service's user (User= and Group= of the unit), created when the image is built so that a
# read-only rootfs has it too; the same as packaging/systemd/pos-agent.sysusers, installed
# below, which the image's systemd_sysusers_check compares it with (home and shell included).
# The serial port comes from SupplementaryGroups=dialout in the unit.
# Group pos-agent-tech: technicians' read-only status and self-check without root (the service is
# a member so that it may give its control socket to the group), as in pos-agent.sysusers.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system pos-agent; --system pos-agent-tech"
USERADD_PARAM:${PN} = "--system --gid pos-agent --groups pos-agent-tech --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin pos-agent"

SYSTEMD_SERVICE:${PN} = "pos-agent.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# The version the agent reports (agent --version, telemetry), the same as the Debian packages and
# Buildroot say for this commit: PV at the release's own commit, else PV+g<commit>.
# packaging/buildtools.py asks git in ${S} (bitbake's git checkout at SRCREV, with its history;
# git is in HOSTTOOLS) and writes agent/_build.py, which the wheel then carries.
do_configure:prepend() {
    nativepython3 ${S}/packaging/buildtools.py stamp ${S}
}

# Hook events of DESIGN.md section 9: one folder each under /etc/pos-agent/hooks.d.
POS_AGENT_HOOK_EVENTS = "provision sync-clock signed-in on-97 on-unregistered display-message reversal-stuck parameters-downloaded parameters-requested registration-check location request-refused"

do_install:append() {
    install -D -m 0644 ${S}/packaging/systemd/pos-agent.service \
        ${D}${systemd_system_unitdir}/pos-agent.service
    # the unit's drop-in: telemetry.textfile may write where node_exporter reads
    install -D -m 0644 ${S}/packaging/systemd/pos-agent.service.d/textfile.conf \
        ${D}${systemd_system_unitdir}/pos-agent.service.d/textfile.conf
    install -D -m 0644 ${S}/packaging/systemd/pos-agent.sysusers \
        ${D}${nonarch_libdir}/sysusers.d/pos-agent.conf
    install -D -m 0644 ${S}/packaging/systemd/pos-agent.tmpfiles \
        ${D}${nonarch_libdir}/tmpfiles.d/pos-agent.conf
    # the over-the-air health gate that Mender, RAUC and SWUpdate scripts call (packaging/ota)
    install -D -m 0755 ${S}/packaging/ota/health-gate \
        ${D}${nonarch_libdir}/pos-agent/ota/health-gate
    install -D -m 0644 ${S}/packaging/config/agent.toml ${D}${sysconfdir}/pos-agent/agent.toml
    install -D -m 0644 ${S}/packaging/config/hooks.d/README \
        ${D}${sysconfdir}/pos-agent/hooks.d/README
    for event in ${POS_AGENT_HOOK_EVENTS}; do
        install -d ${D}${sysconfdir}/pos-agent/hooks.d/$event
    done
    # the hooks' reference and an example for each event, for vendors (in ${PN}-doc)
    install -D -m 0644 ${S}/firmware_hooks/README.md ${D}${docdir}/${BPN}/hooks/README.md
    for example in ${S}/firmware_hooks/examples/*/*; do
        event=$(basename $(dirname $example))
        install -D -m 0644 $example ${D}${docdir}/${BPN}/hooks/examples/$event/$(basename $example)
    done
}

FILES:${PN} += " \
    ${systemd_system_unitdir}/pos-agent.service \
    ${systemd_system_unitdir}/pos-agent.service.d/textfile.conf \
    ${nonarch_libdir}/sysusers.d/pos-agent.conf \
    ${nonarch_libdir}/tmpfiles.d/pos-agent.conf \
    ${nonarch_libdir}/pos-agent/ota/health-gate \
    ${sysconfdir}/pos-agent \
"
CONFFILES:${PN} += " \
    ${sysconfdir}/pos-agent/agent.toml \
    ${sysconfdir}/pos-agent/hooks.d/README \
"
