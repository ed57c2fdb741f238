################################################################################
#
# python-tenacity
#
################################################################################

PYTHON_TENACITY_VERSION = 9.2.1
PYTHON_TENACITY_SOURCE = tenacity-$(PYTHON_TENACITY_VERSION).tar.gz
PYTHON_TENACITY_SITE = https://files.pythonhosted.org/packages/source/t/tenacity
PYTHON_TENACITY_SETUP_TYPE = hatch
PYTHON_TENACITY_LICENSE = Apache-2.0
PYTHON_TENACITY_LICENSE_FILES = LICENSE
PYTHON_TENACITY_DEPENDENCIES = host-python-hatch-vcs

$(eval $(python-package))
