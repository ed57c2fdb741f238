################################################################################
#
# pos-agent
#
################################################################################

# agent.__version__ of this tree (for a local site Buildroot itself says "custom"). The version the
# agent reports is written at build time, below.
POS_AGENT_VERSION = 0.2.0
# The checkout this external tree sits in (make BR2_EXTERNAL=/path/to/pos-agent/packaging/buildroot).
# A vendor whose tree lives elsewhere sets POS_AGENT_SITE, or POS_AGENT_OVERRIDE_SRCDIR in local.mk.
POS_AGENT_SITE = $(BR2_EXTERNAL_POS_AGENT_PATH)/../..
POS_AGENT_SITE_METHOD = local
POS_AGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude .venv --exclude dist --exclude build --exclude '*.egg-info' \
	--exclude .pytest_cache --exclude .ruff_cache --exclude .hypothesis
POS_AGENT_SETUP_TYPE = setuptools
POS_AGENT_LICENSE = Apache-2.0
POS_AGENT_LICENSE_FILES = LICENSE

# The version the agent reports (agent --version, telemetry), the same as the Debian packages and
# the Yocto recipe say for this commit: the release at its own commit, else
# <release>+g<commit>[.dirty], from git in the checkout the tree was copied from (git on the build
# host). A site that is not a git checkout keeps the agent/_build.py it has, else the agent says
# <release>+unknown.
define POS_AGENT_STAMP_VERSION
	$(HOST_DIR)/bin/python3 $(@D)/packaging/buildtools.py stamp \
		--source $(POS_AGENT_OVERRIDE_SRCDIR) $(@D)
endef
POS_AGENT_PRE_BUILD_HOOKS += POS_AGENT_STAMP_VERSION

# The service's user (User= and Group= of the unit), in the image's /etc/passwd at build time so
# that a read-only rootfs has it, and systemd-tmpfiles at build time (BR2_INIT_SYSTEMD_POPULATE_TMPFILES)
# can give it /var/lib/pos-agent. The same system user as packaging/systemd/pos-agent.sysusers
# (installed below), but home "-": makeusers would create a /nonexistent. The serial port comes
# from SupplementaryGroups=dialout in the unit; the additional group pos-agent-tech (created by
# makeusers) is the technicians', whose members read the status without root.
define POS_AGENT_USERS
	pos-agent -1 pos-agent -1 * - /usr/sbin/nologin pos-agent-tech pos-agent daemon
endef

# Hook events of DESIGN.md section 9: one folder each under /etc/pos-agent/hooks.d.
POS_AGENT_HOOK_EVENTS = provision sync-clock signed-in on-97 on-unregistered display-message reversal-stuck parameters-downloaded parameters-requested registration-check location request-refused

define POS_AGENT_INSTALL_CONFIG
	$(INSTALL) -D -m 0755 $(@D)/packaging/ota/health-gate \
		$(TARGET_DIR)/usr/lib/pos-agent/ota/health-gate
	$(INSTALL) -D -m 0644 $(@D)/packaging/config/agent.toml \
		$(TARGET_DIR)/etc/pos-agent/agent.toml
	$(INSTALL) -D -m 0644 $(@D)/packaging/config/hooks.d/README \
		$(TARGET_DIR)/etc/pos-agent/hooks.d/README
	$(foreach event,$(POS_AGENT_HOOK_EVENTS),\
		$(INSTALL) -d $(TARGET_DIR)/etc/pos-agent/hooks.d/$(event)$(sep))
endef
POS_AGENT_POST_INSTALL_TARGET_HOOKS += POS_AGENT_INSTALL_CONFIG

define POS_AGENT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/pos-agent.service \
		$(TARGET_DIR)/usr/lib/systemd/system/pos-agent.service
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/pos-agent.service.d/textfile.conf \
		$(TARGET_DIR)/usr/lib/systemd/system/pos-agent.service.d/textfile.conf
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/pos-agent.sysusers \
		$(TARGET_DIR)/usr/lib/sysusers.d/pos-agent.conf
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/pos-agent.tmpfiles \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/pos-agent.conf
endef

$(eval $(python-package))
