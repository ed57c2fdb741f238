################################################################################
#
# python-platformdirs
#
################################################################################

# For Buildroot before 2026.02 (external.mk skips it where Buildroot has its own). 4.4.0: the
# last release whose build accepts hatch-vcs 0.4, the version of Buildroot 2025.02.
PYTHON_PLATFORMDIRS_VERSION = 4.4.0
PYTHON_PLATFORMDIRS_SOURCE = platformdirs-$(PYTHON_PLATFORMDIRS_VERSION).tar.gz
PYTHON_PLATFORMDIRS_SITE = https://files.pythonhosted.org/packages/source/p/platformdirs
PYTHON_PLATFORMDIRS_SETUP_TYPE = hatch
PYTHON_PLATFORMDIRS_LICENSE = MIT
PYTHON_PLATFORMDIRS_LICENSE_FILES = LICENSE
PYTHON_PLATFORMDIRS_DEPENDENCIES = host-python-hatch-vcs

$(eval $(python-package))
