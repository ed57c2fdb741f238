# meta-python has python3-tenacity from wrynose (6.0) on; scarthgap, walnascar and whinlatter have
# none. DEFAULT_PREFERENCE -1 (and this layer's priority, that of meta-python): where
# meta-python's recipe exists bitbake takes it, this one only where it is the only one.
SUMMARY = "Retry code until it succeeds"
HOMEPAGE = "https://github.com/jd/tenacity"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=175792518e4ac015ab6696d16c4f607e"

DEFAULT_PREFERENCE = "-1"

PYPI_PACKAGE = "tenacity"
SRC_URI[sha256sum] = "adb31d4c263f2bd041081ab33b498309a57c77f9acf2db65aadf0898179cf93a"

# its version comes from setuptools_scm (pyproject.toml's [build-system])
DEPENDS += "python3-setuptools-scm-native"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} += "python3-asyncio python3-core python3-datetime python3-math python3-threading"

BBCLASSEXTEND = "native nativesdk"
