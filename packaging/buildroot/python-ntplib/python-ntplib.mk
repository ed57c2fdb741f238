################################################################################
#
# python-ntplib
#
################################################################################

PYTHON_NTPLIB_VERSION = 0.4.0
PYTHON_NTPLIB_SOURCE = ntplib-$(PYTHON_NTPLIB_VERSION).tar.gz
PYTHON_NTPLIB_SITE = https://files.pythonhosted.org/packages/source/n/ntplib
PYTHON_NTPLIB_SETUP_TYPE = setuptools
PYTHON_NTPLIB_LICENSE = MIT
PYTHON_NTPLIB_LICENSE_FILES = LICENSE

$(eval $(python-package))
