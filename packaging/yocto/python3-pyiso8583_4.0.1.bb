# pyiso8583 has no recipe in meta-python: this one builds it from its PyPI release.
SUMMARY = "A serializer and deserializer of ISO8583 data"
HOMEPAGE = "https://github.com/knovichikhin/pyiso8583"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE.md;md5=94b6dfa1542ed03f0c62edde07c5e522"

PYPI_PACKAGE = "pyiso8583"
SRC_URI[sha256sum] = "0ed8c56920ba79e23e78978e54b0320403445a72ac9fc97aa877cf0afe6fd824"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} += "python3-core"

BBCLASSEXTEND = "native nativesdk"
