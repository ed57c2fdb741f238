SUMMARY = "pos-agent: keeps a POS terminal registered with its acquirer"
DESCRIPTION = "On-terminal agent that diagnoses and repairs '97 terminal not registered' on \
CUP-style POS terminals: self-check, re-provisioning, sign-in, bounded retry, a journal of \
every transaction, firmware hooks. Runs as the systemd service pos-agent.service."
SECTION = "console/network"
LICENSE = "Apache-2.0"
# The project states its licence in pyproject.toml (it has no LICENSE file yet).
LIC_FILES_CHKSUM = "file://pyproject.toml;beginline=11;endline=11;md5=2507bd5f0713f05419cd2f22fa06fe62"

# Where the source comes from: the project's git repository. By default the checkout this layer
# lives in (conf/layer.conf); point POS_AGENT_GIT at your mirror in local.conf or a .bbappend,
# and pin SRCREV to the release's commit for a reproducible image.
POS_AGENT_GIT ??= "git://${POS_AGENT_CHECKOUT};protocol=file;branch=main"
SRC_URI = "${POS_AGENT_GIT};destsuffix=git"
SRCREV ??= "${AUTOREV}"
S = "${UNPACKDIR}/git"

inherit python_setuptools_build_meta systemd useradd

# From pyproject.toml [project].dependencies, with their lower bounds (tests/packaging keeps the
# two lists equal). oe-core and meta-python have all but pyiso8583, whose recipe is beside this
# one. cryptography 43 brought hazmat.decrepit (TripleDES); Yocto 5.0 (scarthgap) has 42.
POS_AGENT_PYTHON_DEPS = " \
    python3-pyiso8583 (>= 4.0) \
    python3-pyserial (>= 3.5) \
    python3-tenacity (>= 8.2) \
    python3-platformdirs (>= 4) \
    python3-cryptography (>= 43) \
    python3-ntplib (>= 0.4) \
    python3-sdnotify (>= 0.3) \
"
# The standard library's parts the agent imports (oe-core splits python3 along
# meta/recipes-devtools/python/python3/python3-manifest.json).
POS_AGENT_STDLIB = " \
    python3-asyncio \
    python3-core \
    python3-crypt \
    python3-datetime \
    python3-email \
    python3-io \
    python3-json \
    python3-logging \
    python3-netclient \
    python3-sqlite3 \
    python3-threading \
    python3-tomllib \
"
RDEPENDS:${PN} += "${POS_AGENT_PYTHON_DEPS} ${POS_AGENT_STDLIB}"

# The service's user (User= and Group= of the unit); the serial port comes from
# SupplementaryGroups=dialout there.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system pos-agent"
USERADD_PARAM:${PN} = "--system --gid pos-agent --no-create-home --home-dir /nonexistent \
    --shell /sbin/nologin pos-agent"

SYSTEMD_SERVICE:${PN} = "pos-agent.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# Hook events of DESIGN.md section 9: one folder each under /etc/pos-agent/hooks.d.
POS_AGENT_HOOK_EVENTS = "provision sync-clock signed-in on-97 on-unregistered display-message reversal-stuck parameters-downloaded parameters-requested"

do_install:append() {
    install -D -m 0644 ${S}/packaging/systemd/pos-agent.service \
        ${D}${systemd_system_unitdir}/pos-agent.service
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
    ${sysconfdir}/pos-agent \
"
CONFFILES:${PN} += " \
    ${sysconfdir}/pos-agent/agent.toml \
    ${sysconfdir}/pos-agent/hooks.d/README \
"
