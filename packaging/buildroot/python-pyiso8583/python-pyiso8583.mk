################################################################################
#
# python-pyiso8583
#
################################################################################

PYTHON_PYISO8583_VERSION = 4.0.1
PYTHON_PYISO8583_SOURCE = pyiso8583-$(PYTHON_PYISO8583_VERSION).tar.gz
PYTHON_PYISO8583_SITE = https://files.pythonhosted.org/packages/source/p/pyiso8583
PYTHON_PYISO8583_SETUP_TYPE = setuptools
PYTHON_PYISO8583_LICENSE = MIT
PYTHON_PYISO8583_LICENSE_FILES = LICENSE.md

$(eval $(python-package))
